"""Stillness filter stage: static clips and slideshows (curator/filters/stillness.py)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from curator.config import CurateConfig
from curator.filters.frames import small_frames
from curator.filters.stillness import THUMB_WIDTH, sample_stride, stillness_scores
from curator.stages.base import Stage, frame_reader_resources
from curator.tasks import ClipTask, Task


@dataclass
class StillnessFilterStage(Stage):
    name = "stillness"
    fps: float = 24.0  # the clip frames' rate (the output's)

    def __post_init__(self) -> None:
        self.resources = frame_reader_resources(0.25, self.device)

    @classmethod
    def from_config(cls, cfg: CurateConfig) -> StillnessFilterStage | None:
        return cls(device=cfg.device, fps=cfg.fps) if cfg.filters.runs("stillness") else None

    def inputs(self) -> list[str]:
        return ["frames"]

    def outputs(self) -> list[str]:
        return ["extra"]

    def process(self, task: ClipTask) -> list[Task]:
        stride = sample_stride(self.fps)
        # Only the compared frames leave the device, already at thumbnail width.
        sampled = small_frames(task.frames, 2 * THUMB_WIDTH, np.arange(0, task.num_frames, stride))
        task.extra.update(stillness_scores(sampled, self.fps / stride))
        return [task]
