"""Aesthetic filter stage: DOVER's aesthetic and technical quality scores of a clip through ONNX
Runtime (curator/filters/aesthetic.py); built only when `filters.aesthetic_model` names a model."""
from __future__ import annotations

from dataclasses import dataclass

from curator.config import CurateConfig
from curator.filters.aesthetic import DoverScorer
from curator.filters.frames import small_frames, spread
from curator.stages.base import Resources, Stage, WorkerContext
from curator.tasks import ClipTask, Task
from curator.video.backend import use_gpu


@dataclass
class AestheticFilterStage(Stage):
    name = "aesthetic"
    model_path: str = ""

    def __post_init__(self) -> None:
        self.resources = Resources(cpus=1.0, gpus=0.25 if use_gpu(self.device) else 0.0)
        self._scorer = None

    @classmethod
    def from_config(cls, cfg: CurateConfig) -> AestheticFilterStage | None:
        if not cfg.filters.runs("aesthetic"):
            return None
        return cls(device=cfg.device, model_path=cfg.filters.aesthetic_model)

    def inputs(self) -> list[str]:
        return ["frames"]

    def outputs(self) -> list[str]:
        return ["extra"]

    def setup(self, ctx: WorkerContext) -> None:
        self._scorer = DoverScorer(self.model_path, ctx.device, threads=ctx.threads_per_task)

    def teardown(self) -> None:
        self._scorer = None

    def process(self, task: ClipTask) -> list[Task]:
        # Only the frames DOVER reads leave the device, at full output resolution (its technical
        # view cuts native-resolution fragments).
        rows = spread(self._scorer.frames_read, task.num_frames)
        task.extra.update(self._scorer.score(small_frames(task.frames, task.frames.shape[2], rows)))
        return [task]
