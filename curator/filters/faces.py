"""Face count with OpenCV's bundled Haar cascade (frontal faces; no model download).

Faces are counted on a few frames of the clip at FACE_WIDTH pixels wide (a face must span at least
MIN_FACE_FRACTION of the frame width to count: smaller ones are crowd texture, not subjects), and
the clip's face count is the median of their counts: a false detection on one frame (hair, a
patterned shirt) does not add a face to the clip. The cascade often fires twice on one face at
neighbouring scales: a box mostly inside a larger one is the same face (`distinct`). OpenCV 5
removed the cascades: the project pins opencv-python-headless 4.x (requirements/constraints.txt).
"""
from __future__ import annotations

import functools
import pathlib

import cv2
import numpy as np

FACE_WIDTH = 480
MIN_FACE_FRACTION = 0.05  # the cascade's 24-pixel window at FACE_WIDTH
SAME_FACE_OVERLAP = 0.3
MIN_CONTRAST = 8.0  # luma standard deviation
CASCADE = "haarcascade_frontalface_default.xml"


@functools.cache
def _cascade_file() -> str:
    data = getattr(cv2, "data", None)
    return str(data.haarcascades) + CASCADE if data is not None else ""


def missing_cascade() -> str | None:
    """Why this OpenCV cannot count faces, or None when it can (checked before a run starts)."""
    if not hasattr(cv2, "CascadeClassifier"):
        return f"OpenCV {cv2.__version__} has no CascadeClassifier (OpenCV 5 removed the Haar cascades)"
    if not pathlib.Path(_cascade_file()).is_file():
        return f"OpenCV {cv2.__version__} ships no {CASCADE}"
    return None


def detector() -> cv2.CascadeClassifier:
    """A cascade for one thread (a CascadeClassifier is not safe to share between threads)."""
    cascade = cv2.CascadeClassifier(_cascade_file())
    if cascade.empty():
        raise RuntimeError(f"OpenCV has no {CASCADE} (opencv-python-headless 4.x ships it)")
    return cascade


def faces(cascade: cv2.CascadeClassifier, frame: np.ndarray) -> np.ndarray:
    """[N, 4] (x, y, w, h) boxes of the faces in an RGB uint8 frame, in the frame's pixels."""
    scale = min(1.0, FACE_WIDTH / frame.shape[1])
    grey = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
    if scale < 1:
        grey = cv2.resize(grey, (FACE_WIDTH, round(frame.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    if grey.std() < MIN_CONTRAST:  # black, or nearly: equalising would make faces of codec noise
        return np.zeros((0, 4), dtype=np.int64)
    grey = cv2.equalizeHist(grey)
    side = max(16, round(MIN_FACE_FRACTION * grey.shape[1]))
    found = cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, minSize=(side, side))
    return distinct((np.asarray(found, dtype=np.float64).reshape(-1, 4) / scale).round().astype(np.int64))


def distinct(boxes: np.ndarray) -> np.ndarray:
    """Boxes (x, y, w, h) without those whose area lies over SAME_FACE_OVERLAP inside a larger kept one."""
    kept: list[np.ndarray] = []
    for box in sorted(boxes, key=lambda b: -b[2] * b[3]):
        x, y, w, h = box
        inside = [max(0, min(x + w, k[0] + k[2]) - max(x, k[0])) * max(0, min(y + h, k[1] + k[3]) - max(y, k[1]))
                  for k in kept]
        if all(area <= SAME_FACE_OVERLAP * w * h for area in inside):
            kept.append(box)
    return np.array(kept, dtype=np.int64).reshape(-1, 4)


def face_count(cascade: cv2.CascadeClassifier, frames: np.ndarray) -> int:
    """The median number of faces found on `frames` (rounded down)."""
    return int(np.median([len(faces(cascade, f)) for f in frames])) if len(frames) else 0
