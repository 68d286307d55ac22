"""Decode stage: one streaming pass over the video (NVDEC on GPU, PyAV on CPU), chunk by chunk.

Full-resolution frames never accumulate: each chunk is reduced at once to what later stages need
(frames at analysis width for PySceneDetect and crop detection, 48x27 frames for TransNetV2); the
resize stage decodes the kept clip ranges again at full resolution. The pass also counts the
frames that really decode, which exposes truncated files whose headers promise more.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from curator.stages.base import Resources, Stage
from curator.tasks import FAILED, FrameAnalysis, Task, VideoTask
from curator.video.backend import decode_range, use_gpu
from curator.video.frames import resize_batch, to_host

THUMB_SIZE = (27, 48)
TRUNCATED_FRACTION = 0.9


def analysis_size(height: int, width: int, analysis_width: int) -> tuple[int, int]:
    """(h, w) at most `analysis_width` wide with the source aspect, both even."""
    w = min(analysis_width, width)
    h = max(2, round(height * w / width / 2) * 2)
    return h, w - w % 2


@dataclass
class DecodeStage(Stage):
    name = "decode"

    @property
    def resources(self) -> Resources:
        return Resources(cpus=1.0, gpus=0.1 if use_gpu(self.cfg.device) else 0.0)

    def inputs(self) -> list[str]:
        return ["meta"]

    def outputs(self) -> list[str]:
        return ["analysis"]

    def process(self, task: VideoTask) -> list[Task]:
        meta = task.meta
        size = analysis_size(meta.height, meta.width, self.cfg.analysis_width)
        small, thumbs, pts = [], [], []
        for chunk in decode_range(task.source, self.cfg.device, self.cfg.decode_chunk_frames, size=size):
            host = to_host(chunk.frames)
            small.append(host)
            thumbs.append(resize_batch(host, THUMB_SIZE))
            if chunk.pts is not None:
                pts.append(chunk.pts)
        decoded = sum(len(c) for c in small)
        if decoded == 0:
            task.reject(FAILED, "corrupt: no decodable frames")
            return [task]
        if meta.num_frames and decoded < TRUNCATED_FRACTION * meta.num_frames:
            task.reject(FAILED, f"truncated: decoded {decoded} of {meta.num_frames} frames")
            return [task]
        meta.num_frames = decoded
        meta.duration_s = decoded / meta.fps
        task.analysis = FrameAnalysis(small=np.concatenate(small), thumbs=np.concatenate(thumbs),
                                      pts=np.concatenate(pts) if pts else None)
        return [task]
