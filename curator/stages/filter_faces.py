"""Face filter stage: the number of faces in a clip (curator/filters/faces.py)."""
from __future__ import annotations

import threading
from dataclasses import dataclass

from curator.config import CurateConfig
from curator.filters.faces import FACE_WIDTH, detector, face_count, missing_cascade
from curator.filters.frames import small_frames, spread
from curator.stages.base import Stage, WorkerContext, frame_reader_resources
from curator.tasks import ClipTask, Task
from megatron_video.config.errors import require


@dataclass
class FaceFilterStage(Stage):
    name = "faces"
    frames_read: int = 3

    def __post_init__(self) -> None:
        self.resources = frame_reader_resources(0.5, self.device)

    def setup(self, ctx: WorkerContext) -> None:
        # One cascade per worker thread; made here, not at construction, because stages travel to Ray
        # actors pickled and a thread-local does not pickle.
        self._local = threading.local()

    @classmethod
    def from_config(cls, cfg: CurateConfig) -> FaceFilterStage | None:
        if not cfg.filters.runs("faces"):
            return None
        problem = missing_cascade()
        require(problem is None, "curate.filters.run",
                f"{problem}: install opencv-python-headless<5 (requirements/constraints.txt) or leave 'faces' out")
        return cls(device=cfg.device, frames_read=cfg.filters.face_frames)

    def inputs(self) -> list[str]:
        return ["frames"]

    def outputs(self) -> list[str]:
        return ["extra"]

    def process(self, task: ClipTask) -> list[Task]:
        if not hasattr(self._local, "cascade"):
            self._local.cascade = detector()
        frames = small_frames(task.frames, FACE_WIDTH, spread(self.frames_read, task.num_frames))
        task.extra["faces"] = face_count(self._local.cascade, frames)
        return [task]
