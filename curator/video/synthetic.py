"""Synthetic H.264 test videos for benchmarks on machines with no footage and no network.

Each shot has its own colour field and a textured block moving across it, so decoders see real
motion and residuals, and shot detection finds a hard cut between shots. Encoded with PyAV's
libx264 where PyAV is installed, else with NVENC.
"""
from __future__ import annotations

import pathlib

import numpy as np


def shot_frames(height: int, width: int, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(30, 226, size=3)
    ramp = np.linspace(-25, 25, width, dtype=np.float32)[None, :, None]
    field = np.clip(base[None, None, :] + ramp, 0, 255).astype(np.uint8)
    block = rng.integers(0, 256, size=(height // 4, width // 4, 3), dtype=np.uint8)
    frames = np.empty((count, height, width, 3), dtype=np.uint8)
    for i in range(count):
        frames[i] = np.broadcast_to(field, (height, width, 3))
        x = int((width - block.shape[1]) * i / max(count - 1, 1))
        y = (height - block.shape[0]) // 2
        frames[i, y:y + block.shape[0], x:x + block.shape[1]] = block
    return frames


def write_test_video(path: pathlib.Path, height: int, width: int, shots: int, frames_per_shot: int,
                     fps: float = 24.0, seed: int = 0) -> str:
    """Write the video; returns the encoder used ("libx264" or "nvenc")."""
    frames = np.concatenate([shot_frames(height, width, frames_per_shot, seed * 1000 + s) for s in range(shots)])
    try:
        from curator.video import pyav_io
    except ImportError:
        from curator.video import nvcodec

        pathlib.Path(path).write_bytes(nvcodec.encode_h264(frames, fps))
        return "nvenc"
    pathlib.Path(path).write_bytes(pyav_io.encode_h264(frames, fps, crf=20, preset="veryfast"))
    return "libx264"
