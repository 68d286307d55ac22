"""Decode an mp4 clip (bytes) on the CPU with PyAV and cut a training window from it."""
from __future__ import annotations

import io

import av
import numpy as np
import torch
import torch.nn.functional as F


def has_video_stream(data: bytes) -> bool:
    """Whether the bytes open as a container with a video stream (reads the header only: cheap)."""
    try:
        with av.open(io.BytesIO(data)) as container:
            return bool(container.streams.video)
    except (av.error.FFmpegError, ValueError, OSError):
        return False


def decode_frames(data: bytes, stop: int | None = None) -> np.ndarray:
    """Frames [0, stop) (all when stop is None) of an encoded clip as uint8 [T, H, W, 3]."""
    frames = []
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            if stop is not None and len(frames) >= stop:
                break
    if not frames:
        raise ValueError("clip has no decodable frames")
    return np.stack(frames)


def window_indices(num_frames: int, length: int, stride: int, generator: torch.Generator) -> np.ndarray:
    """A random window of `length` frame indices every `stride`; short clips repeat their last frame."""
    span = (length - 1) * stride + 1
    start = int(torch.randint(0, max(num_frames - span, 0) + 1, (1,), generator=generator))
    return np.minimum(np.arange(start, start + span, stride), num_frames - 1)


def decode_window(data: bytes, num_frames: int | None, length: int, stride: int,
                  generator: torch.Generator) -> np.ndarray:
    """A random training window; with the clip's frame count known (catalog metadata), decoding
    stops at the window's last frame instead of running through the whole clip."""
    if num_frames is None:
        frames = decode_frames(data)
        return frames[window_indices(len(frames), length, stride, generator)]
    index = window_indices(num_frames, length, stride, generator)
    frames = decode_frames(data, stop=int(index[-1]) + 1)
    return frames[np.minimum(index, len(frames) - 1)]


def to_model_video(frames: np.ndarray, height: int, width: int) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> float [3, T, height, width] in [-1, 1] (area resize: no aliasing)."""
    video = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    if video.shape[-2:] != (height, width):
        video = F.interpolate(video, size=(height, width), mode="area")
    return (video / 127.5 - 1.0).permute(1, 0, 2, 3).contiguous()


def to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """float [3, T, H, W] in [-1, 1] -> uint8 [T, H, W, 3] (for writing mp4s and grids)."""
    frames = ((video.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return frames.permute(1, 2, 3, 0).cpu().numpy()
