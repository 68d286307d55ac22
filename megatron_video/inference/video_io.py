"""Write frames to H.264 mp4 with PyAV (libx264), retimed to a constant frame rate."""
from __future__ import annotations

import pathlib
from fractions import Fraction

import av
import numpy as np

from curator.video.pyav_io import x264_options


def write_mp4(frames: np.ndarray, path: pathlib.Path, fps: float) -> pathlib.Path:
    """uint8 [T, H, W, 3] -> mp4 (yuv420p needs even sides: odd ones are padded by one pixel)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = x264_options(frames.shape[2], crf=18, preset="veryfast")
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = index
            frame.time_base = 1 / rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
