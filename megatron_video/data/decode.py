"""Decode an mp4 clip (bytes) on the CPU with PyAV and cut a training window from it."""
from __future__ import annotations

import io
import itertools
from collections.abc import Iterator

import av
import numpy as np
import torch
import torch.nn.functional as F


def probe_clip(data: bytes) -> tuple[int, str]:
    """(frames, codec) of an encoded clip, demuxed to its end without decoding; ValueError if it is
    unreadable or shorter than its header says (a truncated clip whose header survived)."""
    try:
        with av.open(io.BytesIO(data)) as container:
            if not container.streams.video:
                raise ValueError("no video stream")
            stream = container.streams.video[0]
            packets = sum(1 for packet in container.demux(stream) if packet.size)
            codec = stream.codec_context.name
            promised = stream.frames
    except (av.error.FFmpegError, OSError) as err:
        raise ValueError(str(err)) from None
    if packets == 0:
        raise ValueError("no video packets")
    if promised and packets < promised:
        raise ValueError(f"truncated: {packets} of {promised} frames present")
    return packets, codec


def _decoded(data: bytes, stop: int | None = None) -> Iterator[av.VideoFrame]:
    """Frames [0, stop) (all when stop is None) of an encoded clip, decoded but not yet converted to
    RGB, so each caller converts only the frames it keeps; ValueError if there are none."""
    count = 0
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for count, frame in enumerate(itertools.islice(container.decode(stream), stop), start=1):
            yield frame
    if count == 0:
        raise ValueError("clip has no decodable frames")


def decode_frames(data: bytes) -> np.ndarray:
    """Every frame of an encoded clip as uint8 [T, H, W, 3] (decode_at for some of them)."""
    return np.stack([frame.to_ndarray(format="rgb24") for frame in _decoded(data)])


def window_indices(num_frames: int, length: int, stride: int, generator: torch.Generator) -> np.ndarray:
    """A random window of `length` frame indices every `stride`; short clips repeat their last frame."""
    span = (length - 1) * stride + 1
    start = int(torch.randint(0, max(num_frames - span, 0) + 1, (1,), generator=generator))
    return np.minimum(np.arange(start, start + span, stride), num_frames - 1)


def decode_window(data: bytes, num_frames: int | None, length: int, stride: int,
                  generator: torch.Generator) -> np.ndarray:
    """A random training window; with the clip's frame count known (catalog metadata), decoding
    stops at the window's last frame instead of running through the whole clip, and only the
    window's frames are converted to RGB."""
    if num_frames is None:
        frames = decode_frames(data)
        return frames[window_indices(len(frames), length, stride, generator)]
    return decode_at(data, window_indices(num_frames, length, stride, generator))


def decode_at(data: bytes, index: np.ndarray) -> np.ndarray:
    """Frames `index` (ascending, repeats allowed) of an encoded clip as uint8 [len(index), H, W, 3].
    The frames before each are decoded, as the codec needs, but only those asked for are converted
    (the conversion costs as much as the decoding at training sizes). An index past the clip's end
    (a clip shorter than its metadata says) gets its last frame."""
    wanted, converted = set(index.tolist()), {}
    for end, frame in enumerate(_decoded(data, stop=int(index[-1]) + 1)):
        if end in wanted:
            converted[end] = frame.to_ndarray(format="rgb24")
    # The loop leaves `end` and `frame` at the last decoded frame (_decoded raises if there is none).
    if end not in converted:
        converted[end] = frame.to_ndarray(format="rgb24")
    return np.stack([converted[min(int(i), end)] for i in index])


def to_model_video(frames: np.ndarray, height: int, width: int) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> float [3, T, height, width] in [-1, 1]: resized (area: no aliasing) to
    cover height x width with the aspect ratio kept, then centre-cropped, as the DALI loader does."""
    video = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    scale = max(height / video.shape[-2], width / video.shape[-1])
    size = (max(height, round(video.shape[-2] * scale)), max(width, round(video.shape[-1] * scale)))
    if video.shape[-2:] != size:
        video = F.interpolate(video, size=size, mode="area")
    top, left = (size[0] - height) // 2, (size[1] - width) // 2
    video = video[..., top:top + height, left:left + width]
    return (video / 127.5 - 1.0).permute(1, 0, 2, 3).contiguous()


def to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """float [3, T, H, W] in [-1, 1] -> uint8 [T, H, W, 3] (for writing mp4s and grids)."""
    frames = ((video.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return frames.permute(1, 2, 3, 0).cpu().numpy()
