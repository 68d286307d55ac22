"""The trainer on 2 GPUs (NCCL), data parallel with megatron's distributed optimizer: ranks stay in
step, and a run stopped and resumed repeats an uninterrupted one (Adam moments included). The
reference is the uninterrupted run on the same ranks and device. On CPU (gloo) the same, after a
SIGKILL in the middle of an asynchronous save: tests/training/test_dist_checkpoint.py."""
import pathlib

import pytest

from megatron_video.parallel.state import ParallelConfig
from megatron_video.testing.distributed import requires_gpus, run_distributed


def _train_twice(shard_root: str, run_dir: str, device: str) -> dict:
    from megatron.core import parallel_state

    from megatron_video.config.loader import load_config
    from megatron_video.training.trainer import train

    def config(run: str, *extra: str):
        return load_config("demo", [
            f"run.output_dir={run}", f"data.shards={shard_root}", "train.steps=6", "optim.warmup_steps=2",
            "train.val_every=1000", "train.checkpoint_every=100", "train.val_batches=1",
            "train.tensorboard=false", "data.num_workers=0", "data.val_fraction=0.25", "data.frames=4",
            "data.batch_size=2", "parallel.distributed_optimizer=true", f"run.device={device}",
            # The fused GPU attention kernels accumulate their backward with atomics, so two runs
            # differ in the last bits; the math kernel keeps the straight/resumed comparison exact.
            # (Attention kernels are tested in tests/model.)
            "model.attention_backend=math", *extra])

    straight = train(config(f"{run_dir}/straight"))
    train(config(f"{run_dir}/resumed", "train.stop_after=3"))
    resumed = train(config(f"{run_dir}/resumed"))
    return {"straight": straight.losses, "resumed": resumed.losses, "start": resumed.start_step,
            "dp": parallel_state.get_data_parallel_world_size()}


def check_resumes_exactly(shard_root: pathlib.Path, tmp_path: pathlib.Path, device: str) -> None:
    results = run_distributed(_train_twice, 2, str(shard_root), str(tmp_path), device,
                              parallel=ParallelConfig(distributed_optimizer=True), device=device)
    for rank in results:
        assert rank["dp"] == 2 and rank["start"] == 3
        assert rank["resumed"] == pytest.approx(rank["straight"], rel=1e-6, abs=0)
    # The logged loss is the data-parallel mean: every rank reports the same curve.
    assert results[0]["straight"] == results[1]["straight"]
    assert pathlib.Path(tmp_path, "resumed", "checkpoints", "ckpt_0000003", "metadata.json").exists()


@pytest.mark.gpu
@requires_gpus(2)
def test_distributed_optimizer_run_resumes_exactly_nccl(shard_root, tmp_path):
    check_resumes_exactly(shard_root, tmp_path, "cuda")
