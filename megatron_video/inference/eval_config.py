"""The `eval` section: the timesteps, batches and seed `mvideo eval` scores a checkpoint at."""
from __future__ import annotations

from dataclasses import dataclass, field

from megatron_video.config.errors import require
from megatron_video.inference.vbench_dimensions import CUSTOM_INPUT_WEIGHTS


@dataclass
class EvalConfig:
    timesteps: list = field(default_factory=lambda: [0.1, 0.3, 0.5, 0.7, 0.9])
    batches: int = 4  # validation batches scored (each at every timestep)
    seed: int = 0
    output: str = ""  # empty: <run.output_dir>/eval/val_loss.json
    # VBench dimensions scored on videos of sample.prompts (empty: none); needs the vbench package
    vbench_dimensions: list = field(default_factory=list)
    vbench_weights: str = ""  # a local folder in VBench's cache layout (what $VBENCH_CACHE_DIR would hold)
    vbench_videos_per_prompt: int = 1  # VBench's standard suite samples 5

    def __post_init__(self) -> None:
        require(len(self.timesteps) >= 1 and all(0.0 < float(t) <= 1.0 for t in self.timesteps), "timesteps",
                "needs at least one timestep, each in (0, 1]")
        require(self.batches >= 1, "batches", "must be >= 1")
        unknown = sorted(set(self.vbench_dimensions) - set(CUSTOM_INPUT_WEIGHTS))
        require(not unknown, "vbench_dimensions",
                f"{unknown} cannot be scored on this project's prompts (VBench's object, colour, scene, spatial and "
                f"style dimensions need its own prompt suite's metadata); choose from {sorted(CUSTOM_INPUT_WEIGHTS)}")
        require(self.vbench_videos_per_prompt >= 1, "vbench_videos_per_prompt", "must be >= 1")
