"""A long run's safety nets in one process: SIGTERM -> a loadable checkpoint and the requeue exit code;
a NaN step skipped and counted, too many stop the run; complete-or-invisible checkpoints and
retention; `mvideo export` -> safetensors that `mvideo sample` and a fine-tuning run load exactly."""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest
import torch

from megatron_video.config.loader import load_config
from megatron_video.parallel.state import destroy_distributed
from megatron_video.training import checkpoint as ckpt
from megatron_video.training.faults import FaultMonitor, TrainingFault
from megatron_video.training.long_run_config import FaultConfig
from megatron_video.training.preemption import REQUEUE_EXIT_CODE

ROOT = pathlib.Path(__file__).resolve().parents[2]
OVERRIDES = ["optim.warmup_steps=1", "train.val_every=1000", "train.val_batches=1", "train.tensorboard=false",
             "data.num_workers=0", "data.val_fraction=0.25", "data.frames=4", "data.batch_size=2",
             "run.progress=false", "run.device=cpu"]


def _config(shard_root, run_dir, *extra: str):
    return load_config("demo", [f"run.output_dir={run_dir}", f"data.shards={shard_root}", *OVERRIDES, *extra])


@pytest.fixture(autouse=True)
def _fresh_process_groups():
    yield
    destroy_distributed()


def test_only_published_checkpoints_are_visible_and_retention_keeps_a_series(tmp_path):
    for name in ("ckpt_0000002", "ckpt_0000004", "ckpt_0000006.partial", "ckpt_0000008"):
        (tmp_path / name).mkdir()
    for name in ("ckpt_0000002", "ckpt_0000004", "ckpt_0000006.partial"):
        (tmp_path / name / "metadata.json").write_text("{}")
    # A half-written save (partial, or without its metadata) is never the latest.
    assert ckpt.latest_checkpoint(tmp_path).name == "ckpt_0000004"
    assert [p.name for p in ckpt.complete_checkpoints(tmp_path)] == ["ckpt_0000002", "ckpt_0000004"]
    assert ckpt.to_remove([2, 4, 6, 8, 10, 12], keep_last=2, keep_every=4) == [2, 6]
    assert ckpt.to_remove([2, 4, 6], keep_last=2, keep_every=0) == [2]


def test_loss_spikes_are_logged_and_skips_are_limited(caplog):
    monitor = FaultMonitor(FaultConfig(max_skipped_steps=1, spike_factor=3.0, spike_window=3))
    assert [monitor.observe(step, loss) for step, loss in enumerate([1.0, 1.1, 0.9, 1.0, 3.5, 1.0], 1)] == [
        False, False, False, False, True, False]
    assert "loss spike" in caplog.text
    monitor.skip(7, float("nan"))
    with pytest.raises(TrainingFault, match="faults.max_skipped_steps=1"):
        monitor.skip(8, float("nan"))


def test_sigterm_checkpoints_and_exits_with_the_requeue_code(shard_root, tmp_path):
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "megatron_video.cli.main", "train", "recipe=demo", f"run.output_dir={run_dir}",
               f"data.shards={shard_root}", *OVERRIDES, "train.steps=500", "train.checkpoint_every=1000",
               "train.log_every=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    job = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = run_dir / "metrics.jsonl"
    try:
        deadline = time.monotonic() + 300
        while not (metrics.exists() and metrics.read_text().count("\n") >= 2) and time.monotonic() < deadline:
            assert job.poll() is None, job.stdout.read()[-4000:]
            time.sleep(0.2)
        job.send_signal(signal.SIGTERM)  # what SLURM sends the tasks on a preemption
        output, _ = job.communicate(timeout=240)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == REQUEUE_EXIT_CODE, output[-4000:]
    assert "stop signal SIGTERM" in output
    saved = ckpt.latest_checkpoint(run_dir / "checkpoints")
    stopped_at = ckpt.checkpoint_step(saved)
    assert 2 <= stopped_at < 500
    # Loadable: the next start resumes there and runs on.
    from megatron_video.training.trainer import train

    resumed = train(_config(shard_root, run_dir, f"train.steps={stopped_at + 1}"))
    assert resumed.start_step == stopped_at and len(resumed.losses) == stopped_at + 1


def test_a_nan_step_is_skipped_and_counted_and_too_many_stop_the_run(shard_root, tmp_path, monkeypatch):
    from megatron_video.training import trainer as trainer_module

    original = trainer_module.run_microbatches
    weights_before: list[torch.Tensor] = []
    poisoned_calls = {2}

    def poisoned(chunks, parts, microbatches, dtype, forward_only):
        weights_before.append(torch.cat([p.detach().flatten().clone() for p in parts.chunks[0].parameters()]))
        loss = original(chunks, parts, microbatches, dtype, forward_only)
        if len(weights_before) in poisoned_calls:
            chunks[0].buffers[0].grad_data[0] = float("nan")  # one rank's gradient goes bad
        return loss

    monkeypatch.setattr(trainer_module, "run_microbatches", poisoned)
    summary = trainer_module.train(_config(shard_root, tmp_path / "run", "train.steps=4", "train.checkpoint_every=4"))
    assert summary.skipped_steps == 1
    assert torch.equal(weights_before[1], weights_before[2])  # step 2 changed nothing
    assert not torch.equal(weights_before[2], weights_before[3])
    assert all(torch.isfinite(w).all() for w in weights_before)
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [line["skipped_steps"] for line in lines] == [0, 1, 1, 1]
    destroy_distributed()
    weights_before.clear()
    poisoned_calls.update({3, 4})
    with pytest.raises(TrainingFault, match="faults.max_skipped_steps=1"):
        trainer_module.train(_config(shard_root, tmp_path / "again", "train.steps=4", "faults.max_skipped_steps=1"))


def _probe(model: torch.nn.Module) -> torch.Tensor:
    cfg = model.cfg
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(1, cfg.in_channels, 2, 4, 4, generator=generator)
    text = torch.randn(1, 4, cfg.text_dim, generator=generator)
    with torch.no_grad():
        return model.eval()(x, torch.tensor([0.6]), text, torch.ones(1, 4, dtype=torch.bool))


def _generator(cfg):
    """What `mvideo sample` builds (inference/sample.py)."""
    from megatron_video.inference.generator import VideoGenerator
    from megatron_video.training.build import start_layout

    start_layout(cfg, torch.device("cpu"))
    return VideoGenerator.from_config(cfg)


def test_export_round_trip_sample_and_fine_tune(shard_root, tmp_path):
    from megatron_video.cli.main import main
    from megatron_video.training.trainer import Trainer, train

    run_dir, export_dir = tmp_path / "run", tmp_path / "export"
    train(_config(shard_root, run_dir, "train.steps=2", "train.checkpoint_every=2"))
    destroy_distributed()
    assert main(["export", "recipe=demo", f"run.output_dir={run_dir}", f"to={export_dir}"]) == 0
    exported = json.loads((export_dir / "config.json").read_text())
    assert exported["step"] == 2 and exported["model"]["hidden"] > 0
    destroy_distributed()
    # `mvideo sample` loads the export and the dist checkpoint to the same model.
    from_export = _generator(_config(shard_root, run_dir, f"sample.checkpoint={export_dir}"))
    expected = _probe(from_export.parts.model)
    destroy_distributed()
    from_checkpoint = _generator(_config(shard_root, run_dir))
    assert from_checkpoint.checkpoint.name == "ckpt_0000002"
    assert torch.equal(_probe(from_checkpoint.parts.model), expected)
    destroy_distributed()
    # A fine-tuning run starts from the exported weights.
    tuned = Trainer(_config(shard_root, tmp_path / "tuned", "train.steps=2", f"checkpoint.init_from={export_dir}"))
    assert tuned.resume() is None
    assert torch.equal(_probe(tuned.parts.model), expected)
