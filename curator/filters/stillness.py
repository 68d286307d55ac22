"""Static clips and slideshows, from small greyscale thumbnails.

Frames are compared SAMPLE_FPS apart (a quarter second): consecutive frames of slow but real motion
differ too little to tell from a frozen picture. Per pair of compared frames, the fraction of
thumbnail pixels whose luma changed by more than CHANGE_LEVEL (codec noise on a frozen picture stays
under it). A pair is still when under STILL_PIXELS of the pixels changed, a jump when over
JUMP_PIXELS did (a slide change, a cut the shot detector merged). A clip's scores: still_fraction,
the fraction of its pairs that are still, and jumps, how many of its pairs jump. A static clip is
still throughout; a slideshow is still between a few jumps; both are caught by a still_fraction over
the threshold, and jumps tell the two apart in the catalog. `still_runs` finds the frozen segments
themselves.
"""
from __future__ import annotations

import cv2
import numpy as np

SAMPLE_FPS = 4.0
THUMB_WIDTH = 64
CHANGE_LEVEL = 12
STILL_PIXELS = 0.005
JUMP_PIXELS = 0.3


def thumbnails(frames: np.ndarray, width: int = THUMB_WIDTH) -> np.ndarray:
    """uint8 [T, H, W, 3] RGB -> int16 [T, h, width] luma, area-averaged (noise averages away)."""
    h = max(2, round(frames.shape[1] * width / frames.shape[2]))
    return np.stack([cv2.resize(cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY), (width, h),
                                interpolation=cv2.INTER_AREA) for f in frames]).astype(np.int16)


def changed_pixels(frames: np.ndarray) -> np.ndarray:
    """[T - 1]: per consecutive pair, the fraction of thumbnail pixels that changed."""
    thumbs = thumbnails(frames)
    return (np.abs(np.diff(thumbs, axis=0)) > CHANGE_LEVEL).mean(axis=(1, 2))


def still_runs(changed: np.ndarray, min_frames: int) -> list[tuple[int, int]]:
    """Frame ranges [start, end) of at least `min_frames` frames in which every pair is still."""
    still = np.concatenate([[False], changed <= STILL_PIXELS, [False]])
    edges = np.flatnonzero(np.diff(still.astype(np.int8)))
    # A run of k still pairs starting at pair i covers frames i .. i + k.
    runs = [(int(a), int(b) + 1) for a, b in zip(edges[::2], edges[1::2])]
    return [(a, b) for a, b in runs if b - a >= min_frames]


def sample_stride(fps: float) -> int:
    """Every how many frames of a `fps` video to compare."""
    return max(1, round(fps / SAMPLE_FPS))


def stillness_scores(frames: np.ndarray, fps: float) -> dict[str, float]:
    """{"still_fraction", "jumps"} of a clip's frames at `fps` (frames already SAMPLE_FPS apart: fps 4)."""
    changed = changed_pixels(frames[::sample_stride(fps)])
    if not len(changed):
        return {"still_fraction": 1.0, "jumps": 0}
    return {"still_fraction": float(np.mean(changed <= STILL_PIXELS)), "jumps": int(np.sum(changed >= JUMP_PIXELS))}
