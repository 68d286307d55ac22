"""Crop stage: find black bars and static text bands along the edges of each clip.

Both are measured on the analysis frames the decode pass kept, so no extra decode is needed.
Black bars: edge rows/columns whose brightest pixel stays below `black_level` in every frame.
Text bands (burned-in captions, tickers, channel names): rows within `text_band_fraction` of the
top or bottom edge that are dense in strong horizontal edges and stay still while the picture
around them moves, or, scrolling text, slide sideways as one piece apart from the picture. The box
is mapped back to source pixels, shrunk inward by one analysis pixel so no dark seam survives the
scaling.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from curator.config import CurateConfig
from curator.stages.base import Resources, Stage
from curator.tasks import SKIPPED, ClipTask, CropBox, Task
from curator.video.frames import luma

TEXT_GRADIENT = 40.0
RELATIVE_STILLNESS = 0.25
# Scrolling text is found by comparing frames a lag of SCROLL_LAGS apart, shifted sideways by up to
# MAX_SHIFT analysis pixels: at 160 px wide a ticker moving 1-8 source px/frame (720 wide) moves
# 0.2-1.8 px per frame, so a single lag would see some speeds as sub-pixel and others as too far.
SCROLL_LAGS = (1, 2, 4, 8)
MAX_SHIFT = 4
SCROLL_PAIRS = 32  # frame pairs sampled per lag: the verdict needs a few seconds, not every frame
PICTURE_ROW_STEP = 4
# Glyph tops and outlines are sparser than the text's core rows: take a little more than detected.
TEXT_MARGIN_ROWS = 3


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


def shifted_change(gray: np.ndarray, lag: int) -> np.ndarray:
    """(2 * MAX_SHIFT + 1, rows): mean absolute change of each row between frames `lag` apart, after
    shifting the later frame sideways by -MAX_SHIFT..MAX_SHIFT pixels (index MAX_SHIFT: no shift).
    At most SCROLL_PAIRS evenly spaced frame pairs are compared."""
    starts = np.unique(np.linspace(0, len(gray) - lag - 1, min(SCROLL_PAIRS, len(gray) - lag)).astype(int))
    before, after = gray[starts], gray[starts + lag]
    width = gray.shape[2]
    change = np.empty((2 * MAX_SHIFT + 1, gray.shape[1]), dtype=np.float32)
    for i, shift in enumerate(range(-MAX_SHIFT, MAX_SHIFT + 1)):
        # after[x + shift] against before[x]: content that moved `shift` pixels to the right matches.
        lo, hi = max(0, -shift), width - max(0, shift)
        change[i] = np.abs(after[:, :, lo + shift:hi + shift] - before[:, :, lo:hi]).mean(axis=(0, 2))
    return change


def scrolling_rows(gray: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """For each of `rows`: slides sideways as one rigid piece, at its own speed, through the whole
    clip. At some lag of SCROLL_LAGS, shifting the later frame by a whole number of pixels (not
    zero, and not the picture's own shift, which a camera pan gives every row) leaves under
    RELATIVE_STILLNESS of the change there was without the shift. Frame pairs are sampled over the
    whole clip, so something crossing the frame once (a car, a walker) changes its rows unshifted
    in most pairs and does not qualify; non-rigid motion never shifts back into place. The
    picture's shift is the median over every PICTURE_ROW_STEP-th row."""
    picture_rows = np.arange(0, gray.shape[1], PICTURE_ROW_STEP)
    scrolling = np.zeros(len(rows), dtype=bool)
    for lag in SCROLL_LAGS:
        if len(gray) <= lag:
            break
        change = shifted_change(gray[:, np.concatenate([rows, picture_rows])], lag)
        best = change.argmin(axis=0) - MAX_SHIFT
        picture_shift = np.median(best[len(rows):])
        change, best = change[:, :len(rows)], best[:len(rows)]
        rigid = change.min(axis=0) < RELATIVE_STILLNESS * change[MAX_SHIFT]
        scrolling |= rigid & (best != 0) & (best != picture_shift)
    return scrolling


def text_rows(gray: np.ndarray, edge_density: float) -> np.ndarray:
    """Per row: dense in strong horizontal gradients, and either far more still than the picture
    around it or scrolling sideways on its own (`scrolling_rows`).

    Stillness is relative to the clip's median row, so a static camera's buildings (which barely
    change, but neither does the rest of the frame) are not mistaken for an overlay.
    """
    if len(gray) < 2:
        return np.zeros(gray.shape[1], dtype=bool)
    gradient = np.abs(np.diff(gray, axis=2)) > TEXT_GRADIENT
    dense = gradient.mean(axis=(0, 2)) > edge_density
    change = np.abs(np.diff(gray, axis=0)).mean(axis=(0, 2))
    text = dense & (change < RELATIVE_STILLNESS * np.median(change))
    moving = np.flatnonzero(dense & ~text)  # only dense rows can be text: the costly test runs on them alone
    if len(moving):
        text[moving] = scrolling_rows(gray, moving)
    return text


def text_bands(gray: np.ndarray, band_fraction: float, edge_density: float) -> tuple[int, int]:
    """Rows to drop at the top and bottom so that no text row of the edge bands remains."""
    rows = text_rows(gray, edge_density)
    band = max(1, int(len(rows) * band_fraction))
    top_hits = np.flatnonzero(rows[:band])
    bottom_hits = np.flatnonzero(rows[::-1][:band])
    return (int(top_hits[-1]) + 1 + TEXT_MARGIN_ROWS if len(top_hits) else 0,
            int(bottom_hits[-1]) + 1 + TEXT_MARGIN_ROWS if len(bottom_hits) else 0)


def find_crop(frames: np.ndarray, source_h: int, source_w: int, black_level: float, band_fraction: float,
              edge_density: float) -> CropBox:
    """The content box of a clip in source pixels, from its analysis frames."""
    # Every frame, not a sample: a bar is only a bar if no frame ever lights it.
    gray = luma(frames)
    h, w = gray.shape[1:]
    top, bottom, left, right = black_bars(gray, black_level)
    inner = gray[:, top:h - bottom, left:w - right]
    if inner.size:
        text_top, text_bottom = text_bands(inner, band_fraction, edge_density)
        top, bottom = top + text_top, bottom + text_bottom
    sy, sx = source_h / h, source_w / w

    def inward(n: int, scale: float) -> int:
        return 0 if n == 0 else math.ceil((n + 1) * scale)

    return CropBox(top=inward(top, sy), bottom=source_h - inward(bottom, sy),
                   left=inward(left, sx), right=source_w - inward(right, sx))


@dataclass
class CropStage(Stage):
    name = "crop"
    resources = Resources(cpus=0.25)
    black_level: int = 24
    text_band_fraction: float = 0.25
    text_edge_density: float = 0.12
    max_crop_fraction: float = 0.4

    @classmethod
    def from_config(cls, cfg: CurateConfig) -> CropStage:
        return cls(black_level=cfg.black_level, text_band_fraction=cfg.text_band_fraction,
                   text_edge_density=cfg.text_edge_density, max_crop_fraction=cfg.max_crop_fraction)

    def inputs(self) -> list[str]:
        return ["analysis", "source_meta"]

    def outputs(self) -> list[str]:
        return ["crop"]

    def process(self, task: ClipTask) -> list[Task]:
        meta = task.source_meta
        box = find_crop(task.analysis, meta.height, meta.width, self.black_level, self.text_band_fraction,
                        self.text_edge_density)
        task.analysis = None
        kept_h = (box.bottom - box.top) / meta.height
        kept_w = (box.right - box.left) / meta.width
        if min(kept_h, kept_w) < 1 - self.max_crop_fraction:
            task.reject(SKIPPED, f"crop keeps only {kept_h:.0%} x {kept_w:.0%} of the frame")
            return [task]
        task.crop = box
        return [task]
