"""Weights & Biases for real, offline (`WANDB_MODE=offline`: wandb writes the run under <run>/wandb):
the steps' metrics, the validation loss and the run config are in the run's .wandb log, read back
with wandb's own reader (`wandb leet inspect --json`), and a resumed run logs to the same W&B run.
TensorBoard's event files, read back with its own reader, hold the same values."""
import json
import subprocess
import sys

import pytest

from megatron_video.config.loader import load_config
from megatron_video.parallel.state import destroy_distributed

pytest.importorskip("wandb")


def _records(log) -> list[dict]:
    """Every record of a .wandb transaction log, as wandb's inspector prints them."""
    out = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(log)], check=True,
                         capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_a_run_logs_its_metrics_to_wandb_offline_and_resumes_the_same_wandb_run(shard_root, tmp_path, monkeypatch):
    from megatron_video.training.trainer import train

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = tmp_path / "run"

    def config(*extra: str):
        return load_config("demo", [
            f"run.output_dir={run_dir}", f"data.shards={shard_root}", "train.steps=3", "optim.warmup_steps=1",
            "train.val_every=1000", "train.checkpoint_every=2", "train.val_batches=1", "train.tensorboard=true",
            "data.num_workers=0", "data.val_fraction=0.25", "data.frames=4", "data.batch_size=2",
            "run.progress=false", "run.device=cpu", "train.wandb_project=mvideo-test", *extra])

    try:
        train(config("train.stop_after=2"))
        destroy_distributed()
        resumed = train(config())
    finally:
        destroy_distributed()
    logs = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(logs) == 2
    first, second = _records(logs[0]), _records(logs[1])
    runs = [next(r["run"] for r in records if r["type"] == "run") for records in (first, second)]
    assert runs[0]["run_id"] == runs[1]["run_id"] == (run_dir / "wandb_run_id").read_text()
    assert runs[0]["project"] == "mvideo-test"
    logged_config = runs[0]["config"]["update"]
    assert logged_config["train"]["steps"] == 3 and logged_config["model"]["hidden"] == 256

    history = {}
    for record in first + second:
        if record["type"] == "history":
            history.setdefault(record["history"]["step"]["num"], {}).update(record["history"]["item"])
    assert sorted(history) == [1, 2, 3]
    jsonl = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for line in jsonl:
        logged = history[line["step"]]
        for key in ("loss", "grad_norm", "lr", "skipped_steps", "step_s", "samples_per_s", "tflops_per_gpu"):
            assert logged[f"train/{key}"] == pytest.approx(line[key], rel=1e-12), key
    assert history[3]["val/loss"] == pytest.approx(resumed.val_loss, rel=1e-12)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard")).Reload()
    for tag in ("train/loss", "train/lr", "train/samples_per_s", "val/loss"):
        # TensorBoard stores float32 scalars.
        assert {e.step: e.value for e in events.Scalars(tag)} == pytest.approx(
            {step: logged[tag] for step, logged in history.items() if tag in logged}, rel=1e-6), tag
    assert [r["exit"].get("exit_code", 0) for r in first + second if r["type"] == "exit"] == [0, 0]
