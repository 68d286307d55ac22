"""Re-timing a variable-frame-rate video to a constant rate by its frame timestamps.

At each output instant k / fps (from the first frame's timestamp) the frame on screen is the last
one whose timestamp is not later: frames that stay up long repeat, bursts of short frames are
thinned. The last frame stays up for the median frame interval, so the re-timed video lasts as
long as the source.
"""
from __future__ import annotations

import math

import numpy as np


def retime_indices(pts: np.ndarray, time_base: float, fps: float) -> np.ndarray:
    """For each frame of the re-timed video at `fps`, the index of the source frame it shows;
    `pts` the source frames' timestamps in decode order, in `time_base` units."""
    seconds = (np.asarray(pts, dtype=np.float64) - float(pts[0])) * time_base
    # Decoders hand out presentation order, but packed B-frames can leave a timestamp a hair out of
    # it: a running maximum keeps the search monotonic.
    seconds = np.maximum.accumulate(seconds)
    last = float(np.median(np.diff(seconds))) if len(seconds) > 1 else 1.0 / fps
    count = max(1, math.floor((seconds[-1] + last) * fps + 1e-6))
    instants = np.arange(count) / fps
    return np.maximum(np.searchsorted(seconds, instants + 1e-9, side="right") - 1, 0)
