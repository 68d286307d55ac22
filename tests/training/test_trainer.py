"""The trainer on shards cut from real footage: the loss falls, and a run resumed from its dist
checkpoint is exact."""
import json
import math
import pathlib

import pytest
import torch

from megatron_video.config.loader import load_config
from megatron_video.parallel.state import destroy_distributed
from megatron_video.testing.tiny import tiny_umt5_overrides
from megatron_video.training.trainer import train


def _config(shard_root: pathlib.Path, run_dir: pathlib.Path, steps: int, *extra: str):
    return load_config("demo", [
        f"run.output_dir={run_dir}", f"data.shards={shard_root}", f"train.steps={steps}",
        "optim.warmup_steps=2", "train.val_every=1000", "train.checkpoint_every=4", "train.val_batches=1",
        "train.tensorboard=false", "data.num_workers=0", "data.val_fraction=0.25", "data.frames=4",
        "data.batch_size=2", "run.progress=false", *extra])


@pytest.fixture(autouse=True)
def _fresh_process_groups():
    yield
    destroy_distributed()


def test_loss_falls_on_real_footage(shard_root, tmp_path):
    summary = train(_config(shard_root, tmp_path / "run", 60, "optim.lr=0.002"))
    first, last = summary.loss_drop()
    assert last < 0.8 * first, f"loss did not fall clearly: {first:.4f} -> {last:.4f}"
    assert (tmp_path / "run" / "loss_curve.png").stat().st_size > 10_000
    assert (tmp_path / "run" / "config.yaml").exists()
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == list(range(1, 61))


def test_a_resumed_run_repeats_an_uninterrupted_one_exactly(shard_root, tmp_path):
    straight = train(_config(shard_root, tmp_path / "straight", 8))
    destroy_distributed()
    train(_config(shard_root, tmp_path / "resumed", 8, "train.stop_after=3"))
    destroy_distributed()
    resumed = train(_config(shard_root, tmp_path / "resumed", 8))
    assert resumed.start_step == 3
    assert resumed.losses == pytest.approx(straight.losses, rel=1e-6, abs=0)
    # 8 steps of 2 are four passes over the 4 training clips, so over the corrupt mp4 beside them:
    # skipped and counted in each, step by step the same in the resumed run.
    assert straight.skipped_clips == resumed.skipped_clips == 4
    assert json.loads((tmp_path / "resumed" / "train_summary.json").read_text())["skipped_clips"] == 4

    def counts(run: str) -> list[int]:
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return [json.loads(line)["skipped_clips"] for line in lines]

    assert counts("resumed") == counts("straight") and counts("straight")[-1] == 4

    # Resumed with a larger train.steps, the 8-step run's finished cooldown (LR 0 at its end) gives
    # way to the 12-step run's schedule, still in its stable phase at step 9.
    destroy_distributed()
    extended = train(_config(shard_root, tmp_path / "resumed", 12))
    assert extended.start_step == 8
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert lrs[7] < 1e-3 and lrs[8] == pytest.approx(3e-3)


# The GPU tests encode text with a tiny UMT5: the GPU machine has transformers, not MiniLM's wheel.
@pytest.mark.gpu
def test_training_on_cuda_in_bf16_lowers_the_loss(shard_root, tmp_path):
    summary = train(_config(shard_root, tmp_path / "cuda", 60, "optim.lr=0.002", "run.device=cuda",
                            *tiny_umt5_overrides(tmp_path / "umt5")))
    first, last = summary.loss_drop()
    assert last < 0.8 * first, f"loss did not fall clearly on CUDA: {first:.4f} -> {last:.4f}"


@pytest.mark.gpu
def test_a_dist_checkpoint_saves_and_loads_on_cuda(shard_root, tmp_path):
    """The resumed run repeats the uninterrupted one with megatron dist checkpoints written from CUDA
    (in the background) and loaded back onto it."""
    cuda = ("run.device=cuda", "model.attention_backend=math", "checkpoint.async_save=true",
            *tiny_umt5_overrides(tmp_path / "umt5"))
    straight = train(_config(shard_root, tmp_path / "straight", 8, *cuda))
    destroy_distributed()
    train(_config(shard_root, tmp_path / "resumed", 8, "train.stop_after=3", *cuda))
    destroy_distributed()
    resumed = train(_config(shard_root, tmp_path / "resumed", 8, *cuda))
    assert resumed.start_step == 3
    assert resumed.losses == pytest.approx(straight.losses, rel=1e-6, abs=0)
    assert (tmp_path / "resumed" / "checkpoints" / "ckpt_0000008" / "metadata.json").exists()
    # Observability on a GPU: throughput, TFLOP/s and MFU (H100/H200/... peaks), peak memory.
    last = json.loads((tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 8 and last["tflops_per_gpu"] > 0 and last["peak_memory_gib"] > 0
    assert "mfu" in last or not any(name in torch.cuda.get_device_name() for name in ("H100", "H200", "A100"))


def test_a_run_stopped_by_its_time_limit_reports_a_validation_loss(shard_root, tmp_path):
    """The demo's runs end on train.time_limit_s, mostly before train.val_every: the summary still
    carries the validation loss of the step they stopped at, and that step as the steps reached."""
    summary = train(_config(shard_root, tmp_path / "run", 50, "train.time_limit_s=0.001"))
    assert len(summary.losses) == 1 and math.isfinite(summary.val_loss) and summary.val_loss > 0
    assert summary.steps == 1 and summary.start_step == 0
