"""Motion filter stage: Farneback flow scores of a clip (curator/filters/motion.py) and, with a
segmentation model, their foreground/background split (curator/filters/segmentation.py)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from curator.config import CurateConfig
from curator.filters.frames import small_frames
from curator.filters.motion import FLOW_WIDTH, farneback, flow_frames, flow_scores, pair_starts
from curator.filters.segmentation import BiRefNetSegmenter, split_flow_scores
from curator.stages.base import Resources, Stage, WorkerContext, frame_reader_resources
from curator.tasks import ClipTask, Task
from curator.video.backend import use_gpu


@dataclass
class MotionFilterStage(Stage):
    name = "motion"
    fps: float = 24.0  # the clip frames' rate (the output's)
    segmentation_model: str = ""

    def __post_init__(self) -> None:
        segmenting = bool(self.segmentation_model) and use_gpu(self.device)
        # BiRefNet on the GPU needs more of it than downscaling the frames does.
        self.resources = (Resources(cpus=1.0, gpus=0.25) if segmenting else frame_reader_resources(1.0, self.device))
        self._segmenter = None

    @classmethod
    def from_config(cls, cfg: CurateConfig) -> MotionFilterStage | None:
        if not cfg.filters.runs("motion"):
            return None
        return cls(device=cfg.device, fps=cfg.fps, segmentation_model=cfg.filters.segmentation_model)

    def inputs(self) -> list[str]:
        return ["frames"]

    def outputs(self) -> list[str]:
        return ["extra"]

    def setup(self, ctx: WorkerContext) -> None:
        if self.segmentation_model:
            self._segmenter = BiRefNetSegmenter(self.segmentation_model, ctx.device)

    def teardown(self) -> None:
        self._segmenter = None

    def process(self, task: ClipTask) -> list[Task]:
        starts = pair_starts(task.num_frames)
        rows = np.unique(np.concatenate([starts, starts + 1]))
        small = small_frames(task.frames, FLOW_WIDTH, rows)
        position = {int(r): i for i, r in enumerate(rows)}
        grey = flow_frames(small)
        flows = farneback(grey, np.array([position[int(s)] for s in starts], dtype=np.int64))
        task.extra.update({f"motion_{k}": v for k, v in flow_scores(flows, self.fps).items()})
        if self._segmenter is not None:
            masks = self._segmenter.foreground(small[[position[int(s)] for s in starts]])
            task.extra.update(split_flow_scores(flows, masks, self.fps))
        return [task]
