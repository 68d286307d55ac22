"""The `checkpoint` and `faults` sections: what a long, preemptible run keeps and tolerates."""
from __future__ import annotations

from dataclasses import dataclass

from megatron_video.config.errors import require


@dataclass
class CheckpointConfig:
    keep_last: int = 2  # newest complete checkpoints kept (train.checkpoint_every apart)
    keep_every: int = 0  # also keep every checkpoint whose step is a multiple of this (0: none)
    async_save: bool = False  # write shards in a background process while training goes on
    init_from: str = ""  # a fresh run starts from these exported weights (model.safetensors or its dir)
    # `mvideo export`: the dist checkpoint (or run dir: its latest) to export, optional post-hoc EMA
    # weights (`mvideo ema`'s ema_best.pt) to export instead of its model, and the output dir.
    export_from: str = ""
    export_weights: str = ""
    export_to: str = ""

    def __post_init__(self) -> None:
        require(self.keep_last >= 1, "keep_last", "must be >= 1 (the latest checkpoint is what resumes)")
        require(self.keep_every >= 0, "keep_every", "must be >= 0")


@dataclass
class FaultConfig:
    max_skipped_steps: int = 10  # steps with a non-finite loss/gradient skipped before the run stops
    spike_factor: float = 3.0  # log a loss above this many times the mean of the last spike_window
    spike_window: int = 20

    def __post_init__(self) -> None:
        require(self.max_skipped_steps >= 0, "max_skipped_steps", "must be >= 0")
        require(self.spike_factor > 1.0, "spike_factor", "must be > 1")
        require(self.spike_window >= 1, "spike_window", "must be >= 1")
