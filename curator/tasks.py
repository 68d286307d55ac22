"""The units of work that flow between stages: one VideoTask per input, one ClipTask per clip.

Plain picklable dataclasses, so the same objects travel through the in-process executor, Ray
actors and NeMo Curator executors. A task that fails or is rejected keeps flowing with `status`
set; every stage passes it through untouched and the shard writer records it in the ledger.
"""
from __future__ import annotations

import hashlib
import pathlib
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from curator.metrics import RunMetrics

OK, FAILED, SKIPPED = "ok", "failed", "skipped"


@dataclass
class VideoMeta:
    codec: str = ""
    fps: float = 0.0
    num_frames: int = 0
    duration_s: float = 0.0
    width: int = 0
    height: int = 0
    variable_frame_rate: bool = False
    time_base: float = 0.0  # seconds per timestamp unit of the video stream
    has_audio: bool = False
    # "nvdec" or "pyav": chosen per input by the probe, "pyav" after an NVDEC failure.
    decoder: str = ""
    # What the ledger keeps about an input beyond its status: why it fell back to the CPU decoder,
    # a stream shorter than its container claims.
    notes: list[str] = field(default_factory=list)


@dataclass
class FrameAnalysis:
    """What shot detection and cropping need, computed during the single streaming decode.

    `small` holds every frame at analysis width (RGB); `thumbs` the 48x27 frames TransNetV2 reads;
    `pts` each frame's timestamp (PyAV decode), so later passes can seek to a frame exactly.
    `source_index` maps each frame to the source frame it shows: None when they are the source's own
    frames, else the decode pass re-timed a variable-frame-rate video to the output fps (every
    later stage then sees a constant-rate video; a re-decode reads source frames through the map).
    `kept` holds every frame at `kept_size` (None: source resolution), the size the resize stage
    would decode an uncropped clip at (numpy, or CUDA tensors on the GPU path), so clips are cut
    from this one decode instead of decoding their ranges again; None when the video is too long
    to hold (`retain_frames_max_mb`), and the resize stage then decodes each clip's range.
    """
    small: np.ndarray
    thumbs: np.ndarray
    pts: np.ndarray | None = None
    kept: Any = None
    kept_size: tuple[int, int] | None = None
    source_index: np.ndarray | None = None


@dataclass
class CropBox:
    top: int
    bottom: int
    left: int
    right: int

    def as_list(self) -> list[int]:
        return [self.top, self.bottom, self.left, self.right]


@dataclass
class Task:
    source: str
    status: str = OK
    reason: str = ""
    metrics: RunMetrics = field(default_factory=RunMetrics)

    @property
    def ok(self) -> bool:
        return self.status == OK

    def reject(self, status: str, reason: str) -> None:
        self.status, self.reason = status, reason

    def drop_frames(self) -> None:
        """Release the frames this task carries (the writer reads none of them)."""


@dataclass
class VideoTask(Task):
    meta: VideoMeta | None = None
    analysis: FrameAnalysis | None = None
    shots: list[tuple[int, int]] = field(default_factory=list)
    first_pass_cuts: list[int] = field(default_factory=list)
    clips: list[ClipTask] = field(default_factory=list)

    def drop_frames(self) -> None:
        self.analysis = None


@dataclass
class ClipTask(Task):
    """One clip: source frames [start_frame, end_frame) and, after the later stages, its encoding."""
    key: str = ""
    index: int = 0
    clips_in_source: int = 1
    start_frame: int = 0
    end_frame: int = 0
    source_fps: float = 0.0
    source_meta: VideoMeta | None = None
    analysis: np.ndarray | None = None
    frame_pts: np.ndarray | None = None
    # The source frame each of [start_frame, end_frame) shows (a re-timed VFR video), else None.
    source_index: np.ndarray | None = None
    # Frames [start_frame, end_frame) from the video's single decode, at `source_frames_size`.
    source_frames: Any = None
    source_frames_size: tuple[int, int] | None = None
    crop: CropBox | None = None
    # Text lines the crop stage read (per OCR frame, curator/filters/ocr.py TextBox, source pixels).
    text_lines: list = field(default_factory=list)
    frames: np.ndarray | None = None
    mp4: bytes = b""
    num_frames: int = 0
    # Filter scores by catalog column (curator/stages/filter_*.py); the shard writer stores them.
    extra: dict[str, Any] = field(default_factory=dict)

    def drop_frames(self) -> None:
        self.analysis = self.source_frames = self.frames = None

    def source_frames_for(self, frames: np.ndarray) -> tuple[np.ndarray, int, int]:
        """(source frame numbers of these frames of the clip, source range [start, end) holding
        them): the frames themselves, or for a re-timed VFR video those `source_index` names."""
        if self.source_index is None:
            return frames, self.start_frame, self.end_frame
        return self.source_index[frames - self.start_frame], int(self.source_index[0]), int(self.source_index[-1]) + 1

    @property
    def start_s(self) -> float:
        return self.start_frame / self.source_fps

    @property
    def duration_s(self) -> float:
        return (self.end_frame - self.start_frame) / self.source_fps


def clip_key(source: str, start_frame: int, end_frame: int) -> str:
    """A key that is the same on every run: readable stem, hash of `source`, frame range.

    `source` is the video's path relative to the input (storage.relative_to_input), so the key does
    not change with where the footage or the checkout lives.

    WebDataset splits keys at the first dot, so only [A-Za-z0-9_-] survive in the stem.
    """
    stem = re.sub(r"[^A-Za-z0-9_-]", "_", pathlib.PurePosixPath(source).stem)[:40]
    digest = hashlib.sha1(source.encode()).hexdigest()[:10]
    return f"{stem}-{digest}-{start_frame:07d}-{end_frame:07d}"
