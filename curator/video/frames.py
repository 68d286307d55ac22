"""Frame batch helpers that accept numpy (CPU decode) or CUDA tensors (NVDEC) alike."""
from __future__ import annotations

from fractions import Fraction
from typing import Any, NamedTuple

import cv2
import numpy as np


class Chunk(NamedTuple):
    """A run of decoded frames: their indices, the frames (numpy or CUDA tensor), PyAV timestamps,
    and, when the decoder was asked to keep them, the same frames at a second size (`kept`)."""
    indices: np.ndarray
    frames: Any
    pts: np.ndarray | None = None
    kept: Any = None


def frame_rate(fps: float) -> Fraction:
    """fps as the exact rational containers store (23.976 -> 24000/1001)."""
    return Fraction(fps).limit_denominator(1001)


def resize_batch(batch: Any, size: tuple[int, int], keep_device: bool = False) -> Any:
    """Resize (n, h, w, 3) uint8 frames to size=(h, w) with area averaging (no aliasing on shrink).

    numpy in, numpy out. A torch tensor is resized on its own device; the result is moved to a host
    numpy array unless `keep_device`.
    """
    height, width = size
    if isinstance(batch, np.ndarray):
        if batch.shape[1:3] == (height, width):
            return batch
        return np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in batch])
    import torch.nn.functional as F

    if tuple(batch.shape[1:3]) == (height, width):
        return batch if keep_device else batch.cpu().numpy()
    x = batch.permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    out = x.round_().clamp_(0, 255).to(batch.dtype).permute(0, 2, 3, 1).contiguous()
    return out if keep_device else out.cpu().numpy()


def to_host(batch: Any) -> np.ndarray:
    return batch if isinstance(batch, np.ndarray) else batch.cpu().numpy()


def luma(frames: np.ndarray) -> np.ndarray:
    """BT.601 luma of RGB uint8 frames, as float32 in [0, 255]."""
    return frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
