"""Camera and subject motion from Farneback optical flow on downscaled frames, and the report's
motion classes.

FLOW_PAIRS pairs of frames, each two consecutive frames of the clip (the motion a viewer sees
between frames), spread evenly over the clip, greyscale at FLOW_WIDTH pixels wide. From the flow fields, three scores:
- magnitude: mean flow length as a fraction of the frame width per second (so it holds at any
  resolution and frame rate): a pan across the whole frame in 4 s scores 0.25.
- uniformity: how alike the vectors of one field are, 1 - (RMS deviation from the field's mean
  vector) / (RMS vector length), clipped to [0, 1], averaged over pairs: 1 for a pure pan or tilt
  (every pixel moves the same way), lower for parallax, zooms, and subjects moving over a still
  background.
- consistency: how steady motion is over time, |sum of per-pair mean vectors| / sum of their
  lengths: 1 when the picture keeps moving the same way, near 0 when it jitters back and forth
  (camera shake) or its net motion cancels out.

`motion_class` is the report's table, consistency x uniformity (thresholds in config):

                    uniform                 not uniform
    consistent      good (pan, tilt, track) good (parallax, subject motion)
    inconsistent    bad (camera shake)      neutral (local, undirected motion)

Clips moving less than `min_magnitude` are neutral too: nothing to judge (the stillness filter
decides about them). With a foreground mask (curator/filters/segmentation.py) the same scores are
split into the foreground's and the background's.
"""
from __future__ import annotations

import cv2
import numpy as np

FLOW_WIDTH = 128
FLOW_PAIRS = 12
GOOD, BAD, NEUTRAL = "good", "bad", "neutral"


def flow_frames(frames: np.ndarray, width: int = FLOW_WIDTH) -> np.ndarray:
    """uint8 [T, H, W, 3] RGB -> uint8 [T, h, width] greyscale for the flow (never scaled up)."""
    width = min(width, frames.shape[2])
    h = max(8, round(frames.shape[1] * width / frames.shape[2]))
    return np.stack([cv2.resize(cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY), (width, h),
                                interpolation=cv2.INTER_AREA) for f in frames])


def pair_starts(num_frames: int, pairs: int = FLOW_PAIRS) -> np.ndarray:
    """First frames of up to `pairs` consecutive-frame pairs spread evenly over the clip."""
    if num_frames < 2:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.linspace(0, num_frames - 2, min(pairs, num_frames - 1)).round().astype(np.int64))


def farneback(grey: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """float32 [P, h, w, 2] flow from frame s to s + 1 for each start s, in pixels."""
    return np.stack([cv2.calcOpticalFlowFarneback(grey[s], grey[s + 1], None, pyr_scale=0.5, levels=3, winsize=13,
                                                  iterations=3, poly_n=5, poly_sigma=1.1, flags=0)
                     for s in starts]) if len(starts) else np.zeros((0, *grey.shape[1:], 2), np.float32)


def flow_scores(flows: np.ndarray, fps: float, mask: np.ndarray | None = None) -> dict[str, float]:
    """{"magnitude", "uniformity", "consistency"} of flow fields [P, h, w, 2] (of the pixels where
    `mask` [P, h, w] is True, when given)."""
    if not len(flows):
        return {"magnitude": 0.0, "uniformity": 1.0, "consistency": 1.0}
    width = flows.shape[2]
    vectors = [f.reshape(-1, 2) if mask is None else f[m] for f, m in zip(flows, mask if mask is not None
                                                                           else [None] * len(flows))]
    vectors = [v for v in vectors if len(v)]
    if not vectors:
        return {"magnitude": float("nan"), "uniformity": float("nan"), "consistency": float("nan")}
    means = np.stack([v.mean(axis=0) for v in vectors])
    lengths = np.array([np.sqrt((v ** 2).sum(axis=1)).mean() for v in vectors])
    rms = np.array([np.sqrt((v ** 2).sum(axis=1).mean()) for v in vectors])
    deviation = np.array([np.sqrt(((v - m) ** 2).sum(axis=1).mean()) for v, m in zip(vectors, means)])
    uniformity = np.clip(1.0 - deviation / np.maximum(rms, 1e-6), 0.0, 1.0)
    net = np.sqrt((means.sum(axis=0) ** 2).sum())
    travelled = np.sqrt((means ** 2).sum(axis=1)).sum()
    return {"magnitude": float(lengths.mean() * fps / width),
            "uniformity": float(uniformity.mean()),
            "consistency": float(net / travelled) if travelled > 1e-6 else 1.0}


def motion_class(scores: dict[str, float], min_magnitude: float, min_uniformity: float,
                 min_consistency: float) -> str:
    """The report's table (module docstring): "good", "bad" or "neutral"."""
    if not scores["magnitude"] >= min_magnitude:  # NaN (no pixels) counts as no motion
        return NEUTRAL
    consistent = scores["consistency"] >= min_consistency
    if scores["uniformity"] >= min_uniformity:
        return GOOD if consistent else BAD
    return GOOD if consistent else NEUTRAL


def clip_flows(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(flow fields [P, h, w, 2], pair start frames [P]) of a clip's frames."""
    grey = flow_frames(frames)
    starts = pair_starts(len(grey))
    return farneback(grey, starts), starts
