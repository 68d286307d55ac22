"""Training metrics: greppable log lines, a JSONL file, TensorBoard scalars, Weights & Biases (when
installed and asked for), the loss curve, and each step's throughput: samples/s, TFLOP/s per GPU and
MFU by the model FLOPs function (model/flops.py: matmuls and attention, backward = 2x forward), and
peak GPU memory.

The W&B run's id is kept in the run directory, so a resumed (requeued) run logs to the same W&B
run; `WANDB_MODE=offline` writes it under <run>/wandb for `wandb sync` later."""
from __future__ import annotations

import json
import logging
import pathlib
import secrets
import time

import numpy as np
import torch
from megatron.core import parallel_state

from megatron_video.model.config import VideoDiTConfig
from megatron_video.model.flops import batch_model_flops, peak_tflops

log = logging.getLogger("megatron_video.train")


class MetricsLog:
    def __init__(self, run_dir: pathlib.Path, tensorboard: bool, model: VideoDiTConfig | None = None,
                 device: torch.device | None = None, wandb_project: str = "", wandb_config: dict | None = None):
        self.run_dir, self.model, self.device = run_dir, model, device or torch.device("cpu")
        self.losses: list[float] = []
        run_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(run_dir / "metrics.jsonl", "a")  # noqa: SIM115  (open for the run; close() ends it)
        self._writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(run_dir / "tensorboard"))
        self._wandb = _start_wandb(wandb_project, run_dir, wandb_config or {}) if wandb_project else None
        self._peak = peak_tflops(self.device)
        self._step_started = time.perf_counter()

    @property
    def writer(self):
        return self._writer

    def record(self, step: int, emit: bool, **values: float) -> None:
        self.losses.append(values["loss"])
        self._jsonl.write(json.dumps({"step": step, **values}) + "\n")
        self._scalars(step, {f"train/{name}": value for name, value in values.items()})
        if emit:
            self._jsonl.flush()
            log.info("step=%d %s", step, " ".join(f"{k}={v:.4g}" for k, v in values.items()))

    def scalar(self, step: int, name: str, value: float) -> None:
        self._scalars(step, {name: value})

    def _scalars(self, step: int, values: dict[str, float]) -> None:
        if self._writer is not None:
            for name, value in values.items():
                self._writer.add_scalar(name, value, step)
        if self._wandb is not None:
            self._wandb.log(values, step=step)

    def start_step(self) -> None:
        self._step_started = time.perf_counter()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def throughput(self, microbatches: list[dict]) -> dict[str, float]:
        """This step's speed on this rank: time, samples/s of the whole run (all data-parallel
        replicas), TFLOP/s per GPU, MFU (on GPUs of known peak) and peak memory (GiB, on CUDA)."""
        step_s = time.perf_counter() - self._step_started
        dp = parallel_state.get_data_parallel_world_size()
        samples = sum(len(batch["pack"].segments) if "pack" in batch else batch["noised"].shape[0]
                      for batch in microbatches)
        values = {"step_s": step_s, "samples_per_s": samples * dp / step_s}
        if self.model is not None:
            flops = sum(batch_model_flops(self.model, batch["noised"], batch["text"].shape[1], batch.get("pack"))
                        for batch in microbatches)
            # One replica's FLOPs are split over its tensor x context x pipeline GPUs.
            tflops = flops * dp / torch.distributed.get_world_size() / step_s / 1e12
            values["tflops_per_gpu"] = tflops
            if self._peak:
                values["mfu"] = tflops / self._peak
        if self.device.type == "cuda":
            values["peak_memory_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        return values

    def plot_losses(self, path: pathlib.Path) -> pathlib.Path:
        from megatron_video.plots import plt, save_figure

        steps = list(range(1, len(self.losses) + 1))
        window = max(len(self.losses) // 20, 1)
        # Trailing mean over `window` steps (fewer at the start), from one cumulative sum.
        totals = np.concatenate([[0.0], np.cumsum(self.losses)])
        ends = np.arange(1, len(self.losses) + 1)
        starts = np.maximum(ends - window, 0)
        smooth = (totals[ends] - totals[starts]) / (ends - starts)
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot(steps, self.losses, alpha=0.3, label="loss")
        ax.plot(steps, smooth, label=f"mean of {window} steps")
        ax.set_xlabel("step")
        ax.set_ylabel("flow-matching loss")
        ax.set_yscale("log")
        ax.legend()
        ax.grid(alpha=0.3)
        return save_figure(fig, path, dpi=110)

    def close(self) -> None:
        self._jsonl.close()
        if self._writer is not None:
            self._writer.close()
        if self._wandb is not None:
            self._wandb.finish()


WANDB_ID_FILE = "wandb_run_id"


def _start_wandb(project: str, run_dir: pathlib.Path, config: dict):
    """A W&B run when the wandb package is installed (`pip install .[train]`); otherwise a warning
    and None. The first start of a run directory draws the id; later starts resume that W&B run."""
    try:
        import wandb
    except ImportError:
        log.warning("train.wandb_project=%s but wandb is not installed: logging to TensorBoard/JSONL only", project)
        return None
    id_file = run_dir / WANDB_ID_FILE
    if not id_file.exists():
        id_file.write_text(secrets.token_hex(6))
    return wandb.init(project=project, dir=str(run_dir), name=run_dir.name, id=id_file.read_text().strip(),
                      resume="allow", config=config)
