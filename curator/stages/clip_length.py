"""Clip length stage: turn shots into clips of min..max seconds and fan the video out into ClipTasks.

Shots shorter than the shortest valid clip (both `min_seconds` and `min_frames` at the output
fps) are dropped; longer than `max_seconds` they are cut into equal windows, each within bounds.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from curator import storage
from curator.config import CurateConfig
from curator.stages.base import Resources, Stage
from curator.tasks import SKIPPED, ClipTask, Task, VideoTask, clip_key


def output_frame_count(start_frame: int, end_frame: int, source_fps: float, fps: float) -> int:
    """Frames a source range yields once re-timed to `fps` (nearest-frame sampling)."""
    return math.floor((end_frame - start_frame) / source_fps * fps + 1e-6)


def clip_windows(shot: tuple[int, int], source_fps: float, fps: float, min_clip_seconds: float, max_seconds: float,
                 min_frames: int) -> list[tuple[int, int]]:
    """Windows of `shot` (source frames) that make valid clips: min_clip_seconds..max_seconds long,
    at least `min_frames` once re-timed to `fps`."""
    start, end = shot
    length = end - start
    min_len = math.ceil(min_clip_seconds * source_fps - 1e-6)
    max_len = math.floor(max_seconds * source_fps + 1e-6)
    if length < min_len:
        return []
    count = math.ceil(length / max_len)
    if length / count < min_len:
        # Equal windows would be too short: take whole max-length windows and drop the tail.
        count, size = length // max_len, max_len
    else:
        size = length / count
    bounds = [start + round(i * size) for i in range(count + 1)]
    windows = list(itertools.pairwise(bounds))
    return [(a, b) for a, b in windows
            if output_frame_count(a, b, source_fps, fps) >= min_frames and b - a >= min_len]


@dataclass
class ClipLengthStage(Stage):
    name = "clip_length"
    resources = Resources(cpus=0.25)
    fps: float = 24.0  # the output clips' frame rate
    min_seconds: float = 3.0
    max_seconds: float = 30.0
    min_frames: int = 81
    max_clips: int = 0  # 0 = all
    input: str = ""  # the run's input (curate.input): keys hash each source's path relative to it ("": its name)

    @classmethod
    def from_config(cls, cfg: CurateConfig) -> ClipLengthStage:
        return cls(fps=cfg.fps, min_seconds=cfg.min_seconds, max_seconds=cfg.max_seconds, min_frames=cfg.min_frames,
                   max_clips=cfg.max_clips_per_source, input=cfg.input)

    @property
    def min_clip_seconds(self) -> float:
        """The shortest source span that yields a valid clip: both length rules at once."""
        return max(self.min_seconds, self.min_frames / self.fps)

    def inputs(self) -> list[str]:
        return ["shots", "analysis"]

    def outputs(self) -> list[str]:
        return ["clips"]

    def process(self, task: VideoTask) -> list[Task]:
        fps = task.meta.fps
        windows = [w for shot in task.shots
                   for w in clip_windows(shot, fps, self.fps, self.min_clip_seconds, self.max_seconds, self.min_frames)]
        windows = windows[:self.max_clips or None]  # shots come in time order
        if not windows:
            task.reject(SKIPPED, f"no shot of at least {self.min_clip_seconds:.2f} s")
            return [task]
        kept = task.analysis.kept
        # A torch view pickles its whole storage (Ray, NeMo executors): CUDA clips get their own copy.
        own = (lambda x: x) if kept is None or isinstance(kept, np.ndarray) else (lambda x: x.clone())
        clips, index = [], task.analysis.source_index
        name = storage.relative_to_input(task.source, self.input or task.source)
        for number, (start, end) in enumerate(windows):
            clip = ClipTask(source=task.source, key=clip_key(name, start, end), index=number,
                            clips_in_source=len(windows), start_frame=start, end_frame=end, source_fps=fps,
                            source_meta=task.meta, analysis=task.analysis.small[start:end],
                            frame_pts=None if task.analysis.pts is None else task.analysis.pts[start:end],
                            source_index=None if index is None else index[start:end],
                            source_frames=None if kept is None else own(kept[start:end]),
                            source_frames_size=task.analysis.kept_size)
            clips.append(clip)
        # The clips hold the frames now; the video task must not keep a second reference to them.
        task.analysis.kept = None
        # The video's own stage times travel with its first clip, so per-input sums count them once.
        clips[0].metrics.add(task.metrics)
        return clips
