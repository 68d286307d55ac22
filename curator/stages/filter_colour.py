"""Colour filter stage: colourfulness and hue spread of a clip (curator/filters/colour.py)."""
from __future__ import annotations

from dataclasses import dataclass

from curator.config import CurateConfig
from curator.filters.colour import colour_scores
from curator.filters.frames import small_frames, spread
from curator.stages.base import Stage, frame_reader_resources
from curator.tasks import ClipTask, Task


@dataclass
class ColourFilterStage(Stage):
    name = "colour"
    frames_read: int = 16
    width: int = 160

    def __post_init__(self) -> None:
        self.resources = frame_reader_resources(0.25, self.device)

    @classmethod
    def from_config(cls, cfg: CurateConfig) -> ColourFilterStage | None:
        return cls(device=cfg.device) if cfg.filters.runs("colour") else None

    def inputs(self) -> list[str]:
        return ["frames"]

    def outputs(self) -> list[str]:
        return ["extra"]

    def process(self, task: ClipTask) -> list[Task]:
        frames = small_frames(task.frames, self.width, spread(self.frames_read, task.num_frames))
        task.extra.update(colour_scores(frames))
        return [task]
