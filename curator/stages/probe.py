"""Probe stage: read container metadata and reject inputs that cannot yield clips, with the reason.

Rejected here, cheaply and before any full decode: zero-byte and unreadable files, audio-only
files, codecs without a decoder (or outside `allowed_codecs`), variable frame rate (only with
`reject_variable_frame_rate`; otherwise the decode stage re-times it by timestamps), frames smaller
than `min_input_side` or needing more than `max_upscale` to fill the output, and videos shorter
than the shortest valid clip. It also chooses the input's decoder: NVDEC where the GPU path runs
and takes the stream, PyAV otherwise (the reason goes to the ledger).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import av
import numpy as np

from curator import storage
from curator.config import CurateConfig
from curator.stages.base import Resources, Stage
from curator.tasks import FAILED, SKIPPED, Task, VideoMeta, VideoTask
from curator.video.backend import PYAV, choose_decoder

VFR_SAMPLE_PACKETS = 300


def _frame_intervals(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> np.ndarray:
    """Seconds between consecutive presentation times over the first packets."""
    pts = []
    for packet in container.demux(stream):
        if packet.pts is not None and packet.size > 0:
            pts.append(packet.pts)
        if len(pts) >= VFR_SAMPLE_PACKETS:
            break
    stamps = np.unique(np.array(pts, dtype=np.float64)) * float(stream.time_base)
    return np.diff(stamps)


def is_variable_frame_rate(intervals: np.ndarray, tolerance: float) -> bool:
    """More than 5% of frame intervals off the median by over `tolerance` of it."""
    if len(intervals) < 3:
        return False
    median = float(np.median(intervals))
    return float(np.mean(np.abs(intervals - median) > tolerance * median)) > 0.05


@dataclass
class ProbeStage(Stage):
    name = "probe"
    resources = Resources(cpus=0.5)
    # The output clips' size, and the shortest source span that yields one.
    height: int = 352
    width: int = 640
    min_clip_seconds: float = 3.0
    min_input_side: int = 64
    max_upscale: float = 2.0
    allowed_codecs: list[str] = field(default_factory=list)  # empty: every codec FFmpeg decodes
    reject_variable_frame_rate: bool = False
    vfr_tolerance: float = 0.25
    nvdec_codecs: list[str] = field(default_factory=lambda: ["h264", "hevc", "vp9"])

    @classmethod
    def from_config(cls, cfg: CurateConfig) -> ProbeStage:
        return cls(device=cfg.device, height=cfg.height, width=cfg.width, min_clip_seconds=cfg.min_clip_seconds,
                   min_input_side=cfg.min_input_side, max_upscale=cfg.max_upscale,
                   allowed_codecs=list(cfg.allowed_codecs), reject_variable_frame_rate=cfg.reject_variable_frame_rate,
                   vfr_tolerance=cfg.vfr_tolerance, nvdec_codecs=list(cfg.nvdec_codecs))

    def inputs(self) -> list[str]:
        return ["source"]

    def outputs(self) -> list[str]:
        return ["meta"]

    def process(self, task: VideoTask) -> list[Task]:
        if storage.size(task.source) == 0:
            task.reject(SKIPPED, "zero-byte file")
            return [task]
        try:
            container = av.open(storage.open_for_decode(task.source))
        except av.error.FFmpegError as exc:
            task.reject(FAILED, f"corrupt: cannot open container ({exc})")
            return [task]
        with container:
            if not container.streams.video:
                has_audio = bool(container.streams.audio)
                task.reject(SKIPPED, "audio-only" if has_audio else "no video stream")
                return [task]
            stream = container.streams.video[0]
            if stream.codec_context is None:
                task.reject(SKIPPED, "unsupported codec: FFmpeg has no decoder for it")
                return [task]
            codec = stream.codec_context.name
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            duration = float(stream.duration * stream.time_base) if stream.duration else (
                container.duration / 1e6 if container.duration else 0.0)
            meta = VideoMeta(codec=codec, fps=fps, width=stream.width, height=stream.height,
                             num_frames=stream.frames or round(duration * fps),
                             duration_s=duration, has_audio=bool(container.streams.audio))
            task.meta = meta
            if self.allowed_codecs and codec not in self.allowed_codecs:
                task.reject(SKIPPED, f"unsupported codec {codec}")
                return [task]
            if fps <= 0:
                task.reject(FAILED, "corrupt: no frame rate")
                return [task]
            if min(meta.width, meta.height) < self.min_input_side:
                task.reject(SKIPPED, f"tiny: {meta.width}x{meta.height} < {self.min_input_side} px")
                return [task]
            upscale = max(self.height / meta.height, self.width / meta.width)
            if upscale > self.max_upscale:
                task.reject(SKIPPED, f"low resolution: {meta.width}x{meta.height} would be upscaled {upscale:.1f}x "
                                     f"to {self.width}x{self.height} (curate.max_upscale={self.max_upscale:g})")
                return [task]
            meta.decoder, refusal = choose_decoder(self.device, task.source, codec, stream.codec_context.pix_fmt,
                                                   meta.width, meta.height, container.format.name,
                                                   self.nvdec_codecs)
            if refusal:
                meta.notes.append(f"decoded on the CPU: {refusal}")
            meta.variable_frame_rate = is_variable_frame_rate(_frame_intervals(container, stream),
                                                              self.vfr_tolerance)
            if meta.variable_frame_rate and self.reject_variable_frame_rate:
                task.reject(SKIPPED, "variable frame rate")
                return [task]
            meta.time_base = float(stream.time_base)
            if meta.variable_frame_rate and meta.decoder != PYAV:
                # Re-timing reads each frame's timestamp, which the PyAV pass records.
                meta.decoder = PYAV
                meta.notes.append("decoded on the CPU: variable frame rate, re-timed by timestamps")
        if 0 < meta.duration_s < self.min_clip_seconds:
            task.reject(SKIPPED, f"too short: {meta.duration_s:.2f} s < {self.min_clip_seconds:.2f} s")
        return [task]
