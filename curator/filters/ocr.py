"""Burned-in text with RapidOCR (PaddleOCR's detection and recognition models in ONNX, shipped inside
the `rapidocr-onnxruntime` wheel: nothing to download).

`text_boxes` returns the text lines of a frame whose recognition confidence reaches `min_score` and
that read as at least MIN_CHARACTERS characters: detection alone also fires on text-like texture
(foliage, brickwork, hair), and the recogniser now and then reads one such blob as a lone glyph
with middling confidence, so a line only counts when it is read as text. Two users:
- the crop stage (curator/stages/crop.py) cuts rows holding text within the top or bottom edge band
  (captions, tickers, channel names), from boxes found on a few frames of the clip;
- the text filter scores text_coverage, the fraction of the kept picture that text lines cover on
  the frame with the most text, after the crop.
Frames are read at OCR_WIDTH pixels wide at most: captions stay legible and the detector's cost
(which grows with the pixel count) stays bounded.
"""
from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

import cv2
import numpy as np

OCR_WIDTH = 640
TEXT_MARGIN = 2
MIN_CHARACTERS = 2


@dataclass(frozen=True)
class TextBox:
    top: int
    bottom: int
    left: int
    right: int
    text: str
    score: float

    @property
    def area(self) -> int:
        return max(0, self.bottom - self.top) * max(0, self.right - self.left)


_local = threading.local()


@functools.cache
def _engine_class():
    from rapidocr_onnxruntime import RapidOCR

    return RapidOCR


def engine(threads: int = 1):
    """This thread's RapidOCR (an ONNX Runtime session per thread, `threads` intra-op threads)."""
    if getattr(_local, "threads", None) != threads:
        ocr = _engine_class()(intra_op_num_threads=threads, inter_op_num_threads=1)
        # RapidOCR's default ("min", 736) scales every image UP until its short side is 736 px: a
        # 640 x 352 frame was read at 1338 x 736, four times the pixels. "max" reads frames of up
        # to 960 px at their own size (rounded to multiples of 32), which OCR_WIDTH keeps them under.
        ocr.text_det.limit_type = "max"
        _local.engine, _local.threads = ocr, threads
    return _local.engine


def text_boxes(frame: np.ndarray, min_score: float, threads: int = 1) -> list[TextBox]:
    """Text lines of an RGB uint8 frame read with at least `min_score` confidence, in its pixels."""
    scale = min(1.0, OCR_WIDTH / frame.shape[1])
    image = np.ascontiguousarray(frame[..., ::-1])  # RapidOCR reads OpenCV's BGR
    if scale < 1:
        image = cv2.resize(image, (OCR_WIDTH, round(frame.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    found, _ = engine(threads)(image, use_cls=False)
    boxes = []
    for corners, text, score in found or []:
        if float(score) < min_score or len(str(text).replace(" ", "")) < MIN_CHARACTERS:
            continue
        points = np.asarray(corners, dtype=np.float64) / scale
        boxes.append(TextBox(top=int(np.floor(points[:, 1].min())), bottom=int(np.ceil(points[:, 1].max())),
                             left=int(np.floor(points[:, 0].min())), right=int(np.ceil(points[:, 0].max())),
                             text=str(text), score=float(score)))
    return boxes


def text_coverage(boxes: list[TextBox], top: int, bottom: int, left: int, right: int) -> float:
    """The fraction of the region [top, bottom) x [left, right) that `boxes` cover (overlaps once)."""
    if bottom <= top or right <= left:
        return 0.0
    covered = np.zeros((bottom - top, right - left), dtype=bool)
    for box in boxes:
        covered[max(0, box.top - top):max(0, box.bottom - top), max(0, box.left - left):max(0, box.right - left)] = True
    return float(covered.mean())


def edge_text_rows(boxes: list[TextBox], top: int, bottom: int, band_fraction: float) -> tuple[int, int]:
    """The picture rows [top, bottom) narrowed so that no text line lying within its edge bands
    (`band_fraction` of its height from the top or the bottom) remains, TEXT_MARGIN rows beyond
    each line (glyph outlines and shadows reach past the detected box)."""
    band = band_fraction * (bottom - top)
    new_top = max((b.bottom + TEXT_MARGIN for b in boxes if b.top >= top and b.bottom <= top + band), default=top)
    new_bottom = min((b.top - TEXT_MARGIN for b in boxes if b.bottom <= bottom and b.top >= bottom - band),
                     default=bottom)
    return new_top, new_bottom
