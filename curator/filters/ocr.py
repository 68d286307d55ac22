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
Detection (DBNet) runs on all of a clip's OCR frames at once at DET_WIDTH pixels wide, where
captions and book-sized lines are still found; recognition (CRNN) reads only the lines found, cut
from the frames at OCR_WIDTH, where their glyphs stay legible. Detection is most of the cost on
footage without text, and its cost grows with the pixel count. On the GPU path the detector runs
as torch calls on the clip's GPU (curator/filters/onnx_torch.py), one detector per GPU that batches
the frames of all worker threads (curator/filters/text_detector.py); on the CPU, ONNX Runtime runs it.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import threading
from dataclasses import dataclass

import cv2
import numpy as np

from curator.filters.text_detector import shared_detector

OCR_WIDTH = 640
DET_WIDTH = 512
TEXT_MARGIN = 2
MIN_CHARACTERS = 2

log = logging.getLogger(__name__)


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


# Engines not in use, by intra-op threads: kept across worker threads and runs, since an executor's
# pool threads live for one run and loading RapidOCR's three sessions costs more than a clip's OCR.
_idle: dict[int, list] = {}
_idle_lock = threading.Lock()


@functools.cache
def _engine_class():
    from rapidocr_onnxruntime import RapidOCR

    return RapidOCR


def detector_device(device: str) -> str:
    """Where text detection runs for a worker on `device`: its GPU where torch can run the detector
    there (reading the model's graph needs the `onnx` package), else the CPU (ONNX Runtime)."""
    if not device.startswith("cuda"):
        return "cpu"
    if importlib.util.find_spec("onnx") is None:
        log.warning("curate ocr-on-cpu reason=the onnx package is missing: text detection cannot run on the GPU")
        return "cpu"
    return device


@contextlib.contextmanager
def engine(threads: int = 1):
    """A RapidOCR for the caller alone (its detection and recognition models, each an ONNX Runtime
    session with `threads` intra-op threads): an idle one, else a new one, idle again afterwards."""
    with _idle_lock:
        idle = _idle.setdefault(threads, [])
        ocr = idle.pop() if idle else None
    if ocr is None:
        ocr = _engine_class()(intra_op_num_threads=threads, inter_op_num_threads=1)
    try:
        yield ocr
    finally:
        with _idle_lock:
            _idle[threads].append(ocr)


def detection_input(frames: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, 3] BGR: frames [N, h, w, 3] RGB scaled to at most DET_WIDTH wide, both sides
    multiples of 32 (the detector's strides)."""
    h, w = frames.shape[1:3]
    width = max(32, min(DET_WIDTH, w) // 32 * 32)
    height = max(32, round(h * width / w / 32) * 32)
    return np.stack([cv2.resize(np.ascontiguousarray(f[..., ::-1]), (width, height), interpolation=cv2.INTER_AREA)
                     for f in frames])


def text_probability(bgr: np.ndarray, threads: int = 1, device: str = "cpu") -> np.ndarray:
    """float32 [N, 1, H, W]: DBNet's per-pixel text probability of uint8 BGR frames [N, H, W, 3],
    batched: on `device` where it is a GPU, by the process's one detector there (it batches the
    frames of all worker threads' clips), else by ONNX Runtime on the CPU."""
    if device.startswith("cuda"):
        return shared_detector(device).probability(bgr)
    x = np.ascontiguousarray((bgr.astype(np.float32) / 127.5 - 1.0).transpose(0, 3, 1, 2))
    with engine(threads) as ocr:
        return ocr.text_det.infer(x)[0]


def read_text(frames: np.ndarray, min_score: float, threads: int = 1, device: str = "cpu") -> list[list[TextBox]]:
    """Per frame of uint8 [N, h, w, 3] RGB, its text lines read with at least `min_score` confidence,
    in its pixels, top to bottom: detection on all frames at once at DET_WIDTH, recognition only
    of the lines it found, cut from the frame at OCR_WIDTH."""
    if not len(frames):
        return []
    frames, scale = ocr_size(frames)
    return read_lines(frames, text_probability(detection_input(frames), threads, device), min_score, scale, threads)


def ocr_size(frames: np.ndarray) -> tuple[np.ndarray, float]:
    """(uint8 [N, h, w, 3] frames scaled to at most OCR_WIDTH wide, the scale applied)."""
    scale = min(1.0, OCR_WIDTH / frames.shape[2])
    if scale < 1:
        size = (OCR_WIDTH, round(frames.shape[1] * scale))
        frames = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])
    return frames, scale


def read_lines(frames: np.ndarray, probability: np.ndarray, min_score: float, scale: float,
               threads: int = 1) -> list[list[TextBox]]:
    """Per frame of `frames` (at OCR size), the lines its detection map in `probability` outlines,
    read, in the pixels of the frames they were scaled from by `scale`."""
    with engine(threads) as ocr:
        return [_read_lines(ocr, frame, prob, min_score, scale) for frame, prob in zip(frames, probability)]


def _read_lines(ocr, frame: np.ndarray, prob: np.ndarray, min_score: float, scale: float) -> list[TextBox]:
    """The lines of one frame whose detection map is `prob`, read, in the pixels of the frame
    `frame` was scaled from by `scale`."""
    shape = frame.shape[:2]
    boxes, _ = ocr.text_det.postprocess_op(prob[None], shape)
    boxes = ocr.text_det.filter_tag_det_res(boxes, shape)
    if not len(boxes):
        return []
    bgr = np.ascontiguousarray(frame[..., ::-1])
    read, _ = ocr.text_rec(ocr.get_crop_img_list(bgr, list(boxes.astype(np.float32))))
    found = []
    for corners, (text, score, *_) in zip(boxes, read):
        if float(score) < min_score or len(str(text).replace(" ", "")) < MIN_CHARACTERS:
            continue
        points = np.asarray(corners, dtype=np.float64) / scale
        found.append(TextBox(top=int(np.floor(points[:, 1].min())), bottom=int(np.ceil(points[:, 1].max())),
                             left=int(np.floor(points[:, 0].min())), right=int(np.ceil(points[:, 0].max())),
                             text=str(text), score=float(score)))
    return sorted(found, key=lambda b: (b.top, b.left))


def text_boxes(frame: np.ndarray, min_score: float, threads: int = 1) -> list[TextBox]:
    """Text lines of one RGB uint8 frame read with at least `min_score` confidence, in its pixels."""
    return read_text(frame[None], min_score, threads)[0]


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
