"""The `eval` section: the timesteps, batches and seed `mvideo eval` scores a checkpoint at."""
from __future__ import annotations

from dataclasses import dataclass, field

from megatron_video.config.errors import require


@dataclass
class EvalConfig:
    timesteps: list = field(default_factory=lambda: [0.1, 0.3, 0.5, 0.7, 0.9])
    batches: int = 4  # validation batches scored (each at every timestep)
    seed: int = 0
    output: str = ""  # empty: <run.output_dir>/eval/val_loss.json

    def __post_init__(self) -> None:
        require(len(self.timesteps) >= 1 and all(0.0 < float(t) <= 1.0 for t in self.timesteps), "timesteps",
                "needs at least one timestep, each in (0, 1]")
        require(self.batches >= 1, "batches", "must be >= 1")
