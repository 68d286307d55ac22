"""Text filter stage: the fraction of the kept picture that burned-in text still covers after the
crop, from the text lines the crop stage read (curator/filters/ocr.py); text in the edge bands was
cropped away, text elsewhere (titles, watermarks mid-frame) remains and is scored here."""
from __future__ import annotations

from dataclasses import dataclass

from curator.config import CurateConfig
from curator.filters.ocr import text_coverage
from curator.stages.base import Resources, Stage
from curator.tasks import ClipTask, Task


@dataclass
class TextFilterStage(Stage):
    name = "text"
    resources = Resources(cpus=0.1)

    @classmethod
    def from_config(cls, cfg: CurateConfig) -> TextFilterStage | None:
        return cls() if cfg.filters.runs("text") else None

    def inputs(self) -> list[str]:
        return ["text_lines", "crop"]

    def outputs(self) -> list[str]:
        return ["extra"]

    def process(self, task: ClipTask) -> list[Task]:
        box = task.crop
        # The lines of the frame with the most text left inside the crop.
        task.extra["text_coverage"] = max((text_coverage(lines, box.top, box.bottom, box.left, box.right)
                                           for lines in task.text_lines), default=0.0)
        return [task]
