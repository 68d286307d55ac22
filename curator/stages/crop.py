"""Crop stage: find black bars and burned-in text bands along the edges of each clip.

Black bars: edge rows/columns whose brightest pixel stays below `black_level` in every analysis
frame of the clip (the decode pass kept them, so no extra decode is needed). Text bands (captions,
tickers, channel names): text lines RapidOCR reads (curator/filters/ocr.py) on `ocr_frames` frames
spread over the clip, lying within `text_band_fraction` of the picture's top or bottom edge; the
crop drops the rows down to (up from) the innermost of them. OCR reads the frames the decode pass
kept when they are at least OCR_MIN_WIDTH wide, else decodes those few frames again at OCR width.
Every line read is kept on the task (`text_lines`) for the text filter, which scores what remains
inside the crop. The bar box is mapped back to source pixels, shrunk inward by one analysis pixel
so no dark seam survives the scaling.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from curator.config import CurateConfig
from curator.filters.frames import small_frames, spread
from curator.filters.ocr import OCR_WIDTH, TextBox, detector_device, edge_text_rows, read_text
from curator.stages.base import Stage, WorkerContext, frame_reader_resources
from curator.tasks import SKIPPED, ClipTask, CropBox, Task
from curator.video.backend import decode_range
from curator.video.frames import luma

OCR_MIN_WIDTH = 320


def _edge_run(flags: np.ndarray) -> int:
    """How many leading entries are True."""
    off = np.flatnonzero(~flags)
    return int(off[0]) if len(off) else len(flags)


def black_bars(gray: np.ndarray, black_level: float) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) counts of black rows/columns on each side."""
    brightest = gray.max(axis=0)
    dark_rows = brightest.max(axis=1) < black_level
    dark_cols = brightest.max(axis=0) < black_level
    return (_edge_run(dark_rows), _edge_run(dark_rows[::-1]), _edge_run(dark_cols), _edge_run(dark_cols[::-1]))


def bar_box(frames: np.ndarray, source_h: int, source_w: int, black_level: float) -> CropBox:
    """The box inside the black bars of a clip, in source pixels, from its analysis frames."""
    # Every frame, not a sample: a bar is only a bar if no frame ever lights it.
    gray = luma(frames)
    h, w = gray.shape[1:]
    top, bottom, left, right = black_bars(gray, black_level)
    sy, sx = source_h / h, source_w / w

    def inward(n: int, scale: float) -> int:
        return 0 if n == 0 else math.ceil((n + 1) * scale)

    return CropBox(top=inward(top, sy), bottom=source_h - inward(bottom, sy),
                   left=inward(left, sx), right=source_w - inward(right, sx))


def find_crop(frames: np.ndarray, source_h: int, source_w: int, black_level: float, band_fraction: float,
              text_lines: list[list[TextBox]]) -> CropBox:
    """The content box of a clip in source pixels: inside its black bars (from its analysis
    frames) and past the text lines (in source pixels, per OCR frame) in its edge bands."""
    box = bar_box(frames, source_h, source_w, black_level)
    lines = [line for frame_lines in text_lines for line in frame_lines]
    top, bottom = edge_text_rows(lines, box.top, box.bottom, band_fraction)
    return CropBox(top=top, bottom=max(top + 1, bottom), left=box.left, right=box.right)


@dataclass
class CropStage(Stage):
    name = "crop"
    black_level: int = 24
    text_band_fraction: float = 0.25
    max_crop_fraction: float = 0.4
    ocr_frames: int = 2  # 0: no OCR (bars only; no text lines for the text filter)
    ocr_min_score: float = 0.8
    chunk_frames: int = 64

    def __post_init__(self) -> None:
        # OCR: ONNX Runtime's sessions on the CPU; on the GPU path its detector runs on the GPU, and
        # the kept frames it reads are CUDA tensors.
        self.resources = frame_reader_resources(1.0, self.device)
        self._threads, self._ocr_device = 1, "cpu"

    @classmethod
    def from_config(cls, cfg: CurateConfig) -> CropStage:
        reads_text = "text" in cfg.filters.run
        return cls(black_level=cfg.black_level, text_band_fraction=cfg.text_band_fraction,
                   max_crop_fraction=cfg.max_crop_fraction, ocr_frames=cfg.filters.ocr_frames if reads_text else 0,
                   ocr_min_score=cfg.filters.ocr_min_score, chunk_frames=cfg.decode_chunk_frames, device=cfg.device)

    def inputs(self) -> list[str]:
        return ["analysis", "source_meta", "source_frames"]

    def outputs(self) -> list[str]:
        return ["crop", "text_lines"]

    def setup(self, ctx: WorkerContext) -> None:
        self._threads, self._ocr_device = ctx.threads_per_task, detector_device(ctx.device)

    def ocr_frames_of(self, task: ClipTask) -> tuple[np.ndarray, float]:
        """(RGB frames spread over the clip for OCR, their scale against the source)."""
        meta, count = task.source_meta, task.end_frame - task.start_frame
        rows = spread(self.ocr_frames, count)
        kept = task.source_frames
        if kept is not None and len(kept) == count and kept.shape[2] >= min(OCR_MIN_WIDTH, meta.width):
            frames = small_frames(kept, OCR_WIDTH, rows)
        else:  # not kept, or kept too small to read: decode these few frames again at OCR width
            width = min(OCR_WIDTH, meta.width)
            size = (max(2, round(meta.height * width / meta.width / 2) * 2), width)
            wanted, start, _ = task.source_frames_for(task.start_frame + rows)
            wanted = np.unique(wanted)
            chunks = decode_range(task.source, meta.decoder, self.chunk_frames, start, int(wanted[-1]) + 1,
                                  size=size, indices=wanted, frame_pts=task.frame_pts)
            frames = np.concatenate([chunk.frames if isinstance(chunk.frames, np.ndarray) else
                                     small_frames(chunk.frames, width) for chunk in chunks])
        return frames, frames.shape[2] / meta.width

    def read_text(self, task: ClipTask) -> list[list[TextBox]]:
        """Per OCR frame, its text lines in source pixels."""
        if self.ocr_frames == 0:
            return []
        frames, scale = self.ocr_frames_of(task)
        return [[TextBox(round(b.top / scale), round(b.bottom / scale), round(b.left / scale), round(b.right / scale),
                         b.text, b.score) for b in lines]
                for lines in read_text(frames, self.ocr_min_score, self._threads, self._ocr_device)]

    def process(self, task: ClipTask) -> list[Task]:
        meta = task.source_meta
        task.text_lines = self.read_text(task)
        box = find_crop(task.analysis, meta.height, meta.width, self.black_level, self.text_band_fraction,
                        task.text_lines)
        task.analysis = None
        kept_h = (box.bottom - box.top) / meta.height
        kept_w = (box.right - box.left) / meta.width
        if min(kept_h, kept_w) < 1 - self.max_crop_fraction:
            task.reject(SKIPPED, f"crop keeps only {kept_h:.0%} x {kept_w:.0%} of the frame")
            return [task]
        task.crop = box
        return [task]
