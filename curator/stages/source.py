"""Source stage: expand an input directory or bucket URL into one VideoTask per video file."""
from __future__ import annotations

from dataclasses import dataclass

from curator import storage
from curator.stages.base import Resources, Stage
from curator.tasks import Task, VideoTask


@dataclass
class SourceStage(Stage):
    name = "source"

    @property
    def resources(self) -> Resources:
        return Resources(cpus=0.25)

    def outputs(self) -> list[str]:
        return ["source"]

    def process(self, task: Task) -> list[Task]:
        return [VideoTask(source=uri) for uri in storage.list_videos(task.source, self.cfg.extensions)]
