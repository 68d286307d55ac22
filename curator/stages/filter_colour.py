"""Colour filter stage: colourfulness and hue spread of a clip (curator/filters/colour.py)."""
from __future__ import annotations

from dataclasses import dataclass

from curator.config import CurateConfig
from curator.filters.colour import colour_scores
from curator.filters.frames import small_frames, spread
from curator.stages.base import Resources, Stage
from curator.tasks import ClipTask, Task


@dataclass
class ColourFilterStage(Stage):
    name = "colour"
    resources = Resources(cpus=0.25)
    frames_read: int = 16
    width: int = 160

    @classmethod
    def from_config(cls, cfg: CurateConfig) -> ColourFilterStage | None:
        return cls() if cfg.filters.runs("colour") else None

    def inputs(self) -> list[str]:
        return ["frames"]

    def outputs(self) -> list[str]:
        return ["extra"]

    def process(self, task: ClipTask) -> list[Task]:
        frames = small_frames(task.frames, self.width, spread(self.frames_read, task.num_frames))
        task.extra.update(colour_scores(frames))
        return [task]
