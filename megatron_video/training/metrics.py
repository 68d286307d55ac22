"""Training metrics: greppable log lines, a JSONL file, TensorBoard scalars and the loss curve."""
from __future__ import annotations

import json
import logging
import pathlib

log = logging.getLogger("megatron_video.train")


class MetricsLog:
    def __init__(self, run_dir: pathlib.Path, tensorboard: bool):
        self.run_dir = run_dir
        self.losses: list[float] = []
        self.band_warnings = 0
        run_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(run_dir / "metrics.jsonl", "a")
        self._writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(run_dir / "tensorboard"))

    @property
    def writer(self):
        return self._writer

    def record(self, step: int, log: bool, **values: float) -> None:
        self.losses.append(values["loss"])
        self._jsonl.write(json.dumps({"step": step, **values}) + "\n")
        for name, value in values.items():
            self.scalar(step, f"train/{name}", value)
        if log:
            self._jsonl.flush()
            logging.getLogger("megatron_video.train").info(
                "step=%d %s", step, " ".join(f"{k}={v:.4g}" for k, v in values.items()))

    def scalar(self, step: int, name: str, value: float) -> None:
        if self._writer is not None:
            self._writer.add_scalar(name, value, step)

    def plot_losses(self, path: pathlib.Path) -> pathlib.Path:
        from megatron_video.plots import plt, save_figure

        steps = list(range(1, len(self.losses) + 1))
        window = max(len(self.losses) // 20, 1)
        smooth = [sum(self.losses[max(0, i - window + 1):i + 1]) / len(self.losses[max(0, i - window + 1):i + 1])
                  for i in range(len(self.losses))]
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
