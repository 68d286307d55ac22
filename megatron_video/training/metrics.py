"""Training metrics: greppable log lines, a JSONL file, TensorBoard scalars and the loss curve."""
from __future__ import annotations

import json
import logging
import pathlib

import numpy as np

log = logging.getLogger("megatron_video.train")


class MetricsLog:
    def __init__(self, run_dir: pathlib.Path, tensorboard: bool):
        self.run_dir = run_dir
        self.losses: list[float] = []
        run_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(run_dir / "metrics.jsonl", "a")  # noqa: SIM115  (open for the run; close() ends it)
        self._writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(run_dir / "tensorboard"))

    @property
    def writer(self):
        return self._writer

    def record(self, step: int, emit: bool, **values: float) -> None:
        self.losses.append(values["loss"])
        self._jsonl.write(json.dumps({"step": step, **values}) + "\n")
        for name, value in values.items():
            self.scalar(step, f"train/{name}", value)
        if emit:
            self._jsonl.flush()
            log.info("step=%d %s", step, " ".join(f"{k}={v:.4g}" for k, v in values.items()))

    def scalar(self, step: int, name: str, value: float) -> None:
        if self._writer is not None:
            self._writer.add_scalar(name, value, step)

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
