"""Decode stage: one streaming pass over the video (NVDEC on GPU, PyAV on CPU), chunk by chunk.

Full-resolution frames never accumulate: each chunk is reduced at once to what later stages need
(frames at analysis width for PySceneDetect and crop detection, 48x27 frames for TransNetV2, and
frames at the clip output's scale for the resize stage, resized on the GPU when NVDEC decoded
them), so no clip range is decoded a second time. The pass also counts the frames that really
decode: a container's frame count is only an estimate, and a stream that ends early (or a header
that promised more) keeps the frames it has, with a note for the ledger. An input NVDEC fails on is
decoded again on the CPU.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from curator.config import CurateConfig
from curator.stages.base import Resources, Stage
from curator.stages.resize import aspect_box, decode_size
from curator.tasks import FAILED, CropBox, FrameAnalysis, Task, VideoTask
from curator.video.backend import NVDEC, PYAV, decode_range, use_gpu
from curator.video.frames import gather_host, resize_batch, start_host_copy
from curator.video.retime import retime_indices

log = logging.getLogger(__name__)
THUMB_SIZE = (27, 48)
# Host copies of analysis frames in flight before they are collected into pageable memory: enough
# to wait once per many chunks, and a bound on the page-locked memory a long video holds.
PINNED_IN_FLIGHT_BYTES = 64 << 20


def analysis_size(height: int, width: int, analysis_width: int) -> tuple[int, int]:
    """(h, w) at most `analysis_width` wide with the source aspect, both even."""
    w = min(analysis_width, width)
    h = max(2, round(height * w / width / 2) * 2)
    return h, w - w % 2


def kept_size(height: int, width: int, out_height: int, out_width: int) -> tuple[int, int] | None:
    """The size the resize stage decodes an uncropped clip at (None: the source resolution)."""
    scale, size = decode_size(height, width, aspect_box(CropBox(0, height, 0, width), out_height, out_width),
                              out_height, out_width)
    return size if scale < 1 else None


def _nbytes(batch) -> int:
    return int(batch.nbytes) if isinstance(batch, np.ndarray) else batch.numel() * batch.element_size()


def _concat(batches: list):
    if isinstance(batches[0], np.ndarray):
        return np.concatenate(batches)
    import torch

    return torch.cat(batches)


@dataclass
class DecodeStage(Stage):
    name = "decode"
    # The output clips' size: frames are kept at the scale the resize stage needs for them.
    height: int = 352
    width: int = 640
    analysis_width: int = 160
    chunk_frames: int = 64
    retain_frames_max_mb: int = 2048
    fps: float = 24.0  # the output's: variable-frame-rate videos are re-timed to it

    def __post_init__(self) -> None:
        gpu = use_gpu(self.device)
        self.resources = Resources(cpus=1.0, gpus=0.1 if gpu else 0.0, nvdec=gpu)

    @classmethod
    def from_config(cls, cfg: CurateConfig) -> DecodeStage:
        return cls(device=cfg.device, height=cfg.height, width=cfg.width, analysis_width=cfg.analysis_width,
                   chunk_frames=cfg.decode_chunk_frames, retain_frames_max_mb=cfg.retain_frames_max_mb, fps=cfg.fps)

    def inputs(self) -> list[str]:
        return ["meta"]

    def outputs(self) -> list[str]:
        return ["analysis"]

    def process(self, task: VideoTask) -> list[Task]:
        meta = task.meta
        try:
            passed = self._decode(task, meta.decoder)
        except Exception as exc:  # PyNvVideoCodec's exceptions are not importable by name
            if meta.decoder != NVDEC:
                raise
            # Whatever NVDEC could not take (an unusual profile, a broken packet), the CPU decoder
            # may: the whole input again on the CPU, the partial GPU pass dropped.
            log.warning("curate nvdec-fallback source=%s reason=%s", task.source, exc)
            meta.decoder = PYAV
            meta.notes.append(f"decoded on the CPU: NVDEC failed ({_first_line(exc)})")
            passed = self._decode(task, PYAV)
        small, thumbs, pts, kept, keep_at = passed
        decoded = sum(len(part) for part in small)
        if decoded == 0:
            task.reject(FAILED, "corrupt: no decodable frames")
            return [task]
        if meta.num_frames and decoded < meta.num_frames:
            # A container's frame count is an estimate (AVI headers, edit lists, a truncated file):
            # the frames that exist are the video.
            meta.notes.append(f"stream ends after {decoded} frames; the container claims {meta.num_frames}")
        meta.num_frames = decoded
        meta.duration_s = decoded / meta.fps
        task.analysis = FrameAnalysis(small=_concat(small), thumbs=_concat(thumbs),
                                      pts=np.concatenate(pts) if pts else None,
                                      kept=_concat(kept) if kept else None, kept_size=keep_at)
        if meta.variable_frame_rate:
            self._retime(task)
        return [task]

    def _retime(self, task: VideoTask) -> None:
        """Re-time a variable-frame-rate video to the output fps by its timestamps
        (curator/video/retime.py): every later stage sees a constant-rate video whose frame i shows
        source frame `analysis.source_index[i]`."""
        meta, analysis = task.meta, task.analysis
        index = retime_indices(analysis.pts, meta.time_base, self.fps)
        gather = index if analysis.kept is None or isinstance(analysis.kept, np.ndarray) else _on(index, analysis.kept)
        analysis.small, analysis.thumbs = analysis.small[index], analysis.thumbs[index]
        analysis.kept = None if analysis.kept is None else analysis.kept[gather]
        analysis.pts, analysis.source_index = None, index
        meta.notes.append(f"variable frame rate: {meta.num_frames} frames re-timed to {len(index)} at {self.fps:g} fps")
        meta.fps, meta.num_frames, meta.duration_s = self.fps, len(index), len(index) / self.fps

    def _decode(self, task: VideoTask, decoder: str) -> tuple[list, list, list, list, tuple[int, int] | None]:
        """One pass over the input with `decoder`: (analysis frames, thumbnails, timestamps, kept
        frames (empty when not kept), the kept frames' size) as lists of chunks."""
        meta = task.meta
        size = analysis_size(meta.height, meta.width, self.analysis_width)
        keep_at = kept_size(meta.height, meta.width, self.height, self.width)
        keep_h, keep_w = keep_at or (meta.height, meta.width)
        budget = self.retain_frames_max_mb * (1 << 20)
        keep = meta.num_frames * keep_h * keep_w * 3 <= budget
        small, thumbs, pts, kept = [], [], [], []
        in_flight: list[tuple] = []  # (thumbnails, analysis frames) copies not yet collected
        kept_bytes = 0

        def collect() -> None:
            thumb_copies, small_copies = zip(*in_flight)
            thumbs.append(gather_host(list(thumb_copies)))
            small.append(gather_host(list(small_copies)))
            in_flight.clear()

        for chunk in decode_range(task.source, decoder, self.chunk_frames, size=size, keep=keep,
                                  keep_size=keep_at):
            # Thumbnails from the analysis frames where they are (on the GPU: before the host
            # copy). The host copies are only queued: this thread goes on decoding while they run,
            # and waits for them once per PINNED_IN_FLIGHT_BYTES of frames.
            in_flight.append((start_host_copy(resize_batch(chunk.frames, THUMB_SIZE, keep_device=True)),
                              start_host_copy(chunk.frames)))
            if sum(_nbytes(frames) for _, frames in in_flight) > PINNED_IN_FLIGHT_BYTES:
                collect()
            if chunk.pts is not None:
                pts.append(chunk.pts)
            if keep and chunk.kept is not None:
                kept.append(chunk.kept)
                kept_bytes += _nbytes(chunk.kept)
                if kept_bytes > budget:  # the header under-stated the length: re-decode clip ranges instead
                    keep, kept = False, []
        if in_flight:
            collect()
        return small, thumbs, pts, kept, keep_at


def _on(index: np.ndarray, frames):
    import torch

    return torch.as_tensor(index, device=frames.device)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
