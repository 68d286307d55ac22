"""A clip's frames for the filters: downscaled where they are (on the GPU for CUDA frames), then on
the host, so every filter reads small numpy frames whatever the decode path."""
from __future__ import annotations

from typing import Any

import numpy as np

from curator.video.frames import resize_batch


def small_frames(frames: Any, width: int, rows: np.ndarray | None = None) -> np.ndarray:
    """uint8 [T', h, width, 3] host frames: `frames` [T, H, W, 3] (numpy or a CUDA tensor), only
    `rows` of them when given, scaled to `width` pixels wide with the aspect kept (never up)."""
    if rows is not None:
        frames = frames[rows if isinstance(frames, np.ndarray) else _on_device(rows, frames)]
    h, w = frames.shape[1:3]
    width = min(width, w)
    return resize_batch(frames, (max(2, round(h * width / w)), width))


def spread(count: int, total: int) -> np.ndarray:
    """`count` frame indices spread evenly over `total` frames (each once)."""
    return np.unique(np.linspace(0, total - 1, min(count, total)).round().astype(np.int64))


def _on_device(rows: np.ndarray, frames: Any) -> Any:
    import torch

    return torch.as_tensor(rows, device=frames.device)
