"""Remote encoding (data.source=remote) on a real local Ray cluster: batches equal inline encoding,
a killed worker's batches are retried elsewhere, a stuck one's time out and are skipped and counted,
and a training run whose worker is killed finishes with the losses of inline encoding."""
import logging
import os
import signal
import time

import pytest
import ray
import torch

from megatron_video.config.loader import load_config
from megatron_video.data.clip_encoder import ClipEncoder
from megatron_video.data.dataset import SKIPPED, build_loader
from megatron_video.data.remote_encoding import RemoteEncodedLoader
from megatron_video.parallel.state import destroy_distributed
from megatron_video.training.trainer import train


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One two-CPU local cluster for the module (each actor reserves half a CPU). On a crowded machine
    the raylet can abort its start when Ray's dashboard agent takes over its fixed 15 s to come up
    (ray-project/ray#65983): a second start then usually succeeds."""
    ray.shutdown()
    for attempt in range(3):
        try:
            ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
            break
        except Exception:  # Ray raises a bare Exception for a node that timed out during startup
            ray.shutdown()
            if attempt == 2:
                raise
    yield
    ray.shutdown()


def _config(shard_root, run_dir, *extra):
    return load_config("demo", [
        f"run.output_dir={run_dir}", f"data.shards={shard_root}", "data.num_workers=0", "data.frames=4",
        "data.batch_size=2", "data.val_fraction=0.0", "data.source=remote", "data.remote_workers=2",
        "data.remote_cpus=0.5", "data.remote_inflight=4", "run.progress=false", *extra])


def _ready_worker_pids(loader: RemoteEncodedLoader) -> list[int]:
    """The workers' processes, once their encoders are loaded (before the loader submits a batch)."""
    return ray.get([worker.probe for worker in loader.workers])


def test_a_killed_worker_is_replaced_and_every_batch_equals_inline_encoding(shard_root, tmp_path):
    cfg = _config(shard_root, tmp_path)
    loader = RemoteEncodedLoader(cfg, "train", seed=0, repeat=False)
    os.kill(_ready_worker_pids(loader)[1], signal.SIGKILL)  # up, then dead before its first batch
    batches = list(loader)
    stats = loader.stats
    loader.close()
    assert (stats.batches, stats.skipped) == (4, 0) and stats.errors >= 1 and stats.restarts >= 1
    reference = ClipEncoder(cfg.data, cfg.encoders, 0, {}, torch.device("cpu"), tmp_path)
    inline = list(build_loader(cfg.data, "train", seed=0, repeat=False))
    assert [b["key"] for b in batches] == [b["key"] for b in inline]
    assert [b[SKIPPED] for b in batches] == [b[SKIPPED] for b in inline]  # the reader's unreadable clips
    for remote, local in zip(batches, inline):
        text, mask = reference.text.encode(local["caption"])
        assert torch.equal(remote["latents"], reference.codec.encode(local["video"]))
        assert torch.equal(remote["text"], text) and torch.equal(remote["mask"], mask)


def test_a_stuck_worker_times_out_and_its_batch_is_skipped_and_counted(shard_root, tmp_path, caplog):
    cfg = _config(shard_root, tmp_path, "data.remote_timeout_s=10", "data.remote_retries=0")
    loader = RemoteEncodedLoader(cfg, "train", seed=0, repeat=False)
    stuck = _ready_worker_pids(loader)[1]
    os.kill(stuck, signal.SIGSTOP)
    try:
        with caplog.at_level(logging.WARNING, logger="megatron_video.data.remote_encoding"):
            started = time.monotonic()
            batches = list(loader)
            waited = time.monotonic() - started
    finally:
        os.kill(stuck, signal.SIGCONT)
        loader.close()
    # Batches go to the least-loaded worker: 0, 2 to the first, 1, 3 to the stuck second. Batch 1
    # waited out its timeout once and was skipped (no retries); batch 3 went to the healthy worker
    # without counting against it.
    assert (loader.stats.timed_out, loader.stats.skipped, loader.stats.restarts) == (1, 1, 1)
    assert len(batches) == 3 and waited < 60
    assert "remote batch=1 worker_failed reason=timeout" in caplog.text and "remote batch=1 skipped" in caplog.text
    delivered = [key for batch in batches for key in batch["key"]]
    assert len(delivered) == len(set(delivered)) == 6
    # The skipped batch's two clips are counted with the next batch delivered, as the reader's are.
    unreadable = sum(b[SKIPPED] for b in build_loader(cfg.data, "train", seed=0, repeat=False))
    assert sum(b[SKIPPED] for b in batches) == unreadable + 2


def test_training_goes_on_when_a_remote_worker_is_killed(shard_root, tmp_path, caplog, monkeypatch):
    steps = ("train.steps=3", "optim.warmup_steps=1", "train.val_every=1000", "train.checkpoint_every=1000",
             "train.val_batches=1", "train.tensorboard=false", "data.val_fraction=0.25", "train.cfg_dropout=0.5")
    killed: list[int] = []
    start_loader = RemoteEncodedLoader.__init__

    def start_then_kill_a_worker(self, cfg, split, *args, **kwargs):
        """The training loader's second worker is SIGKILLed once up, before it gets a batch: its first
        batch fails, whatever the machine's speed (a watcher thread could come too late)."""
        start_loader(self, cfg, split, *args, **kwargs)
        if split == "train" and not killed:
            killed.append(_ready_worker_pids(self)[1])
            os.kill(killed[0], signal.SIGKILL)

    try:
        inline = train(_config(shard_root, tmp_path / "inline", *steps, "data.source=clips"))
        destroy_distributed()
        monkeypatch.setattr(RemoteEncodedLoader, "__init__", start_then_kill_a_worker)
        with caplog.at_level(logging.WARNING, logger="megatron_video.data.remote_encoding"):
            remote = train(_config(shard_root, tmp_path / "remote", *steps))
    finally:
        destroy_distributed()
    assert killed and "remote worker replaced" in caplog.text
    # Retried batches are the same batches, in order: the run is the inline run, across epochs too.
    assert remote.losses == inline.losses and len(remote.losses) == 3
