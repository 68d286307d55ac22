"""The loaders' worker processes exit cleanly at shutdown (megatron_video/data/loader_workers.py):
a worker whose queue feeder was still sending when it exited used to abort (SIGABRT, "DataLoader
worker ... killed by signal: Aborted")."""
from megatron_video.config.run import DataConfig
from megatron_video.data.dataset import build_loader


def test_cpu_loader_workers_exit_cleanly_after_reading_ahead(shard_root):
    # Batches of 4 x 3 x 8 x 352 x 640 floats (43 MB): still being sent when the workers stop.
    cfg = DataConfig(shards=str(shard_root), frames=8, height=352, width=640, batch_size=4, num_workers=2,
                     shuffle_buffer=4, val_fraction=0.0)
    loader = build_loader(cfg, "train", seed=0, repeat=True)
    iterator = iter(loader)
    for _ in range(3):  # the workers keep reading ahead meanwhile
        next(iterator)
    workers = list(iterator._workers)
    del iterator, loader  # the persistent workers are shut down here
    for worker in workers:
        worker.join(timeout=120)
    assert [worker.exitcode for worker in workers] == [0, 0]
