"""Source stage: expand an input directory or bucket URL into one VideoTask per video file."""
from __future__ import annotations

from dataclasses import dataclass, field

from curator import storage
from curator.config import CurateConfig
from curator.stages.base import Resources, Stage
from curator.tasks import Task, VideoTask


@dataclass
class SourceStage(Stage):
    name = "source"
    resources = Resources(cpus=0.25)
    # File name endings taken as videos (lower case, with the dot).
    extensions: list[str] = field(default_factory=lambda: [".mp4"])

    @classmethod
    def from_config(cls, cfg: CurateConfig) -> SourceStage:
        return cls(extensions=list(cfg.extensions))

    def outputs(self) -> list[str]:
        return ["source"]

    def process(self, task: Task) -> list[Task]:
        return [VideoTask(source=uri) for uri in storage.list_videos(task.source, self.extensions)]
