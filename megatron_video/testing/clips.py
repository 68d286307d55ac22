"""Encoded clips for the loaders' tests and benchmark: VP9 (the codec DALI's CPU decoder reads, so
CI can run the DALI pipeline) or H.264 (what curation writes, decoded by DALI on the GPU)."""
from __future__ import annotations

import pathlib
import tempfile

import av
import numpy as np

CODEC_OPTIONS = {"libvpx-vp9": {"deadline": "realtime", "cpu-used": "8", "crf": "20", "b": "0"},
                 "libx264": {"preset": "veryfast", "crf": "20"}}


def encode_clip(frames: np.ndarray, codec: str = "libvpx-vp9", fps: int = 24, faststart: bool = False) -> bytes:
    """uint8 [T, H, W, 3] (even H and W) -> mp4 bytes. `faststart` puts the header before the
    frames, so a copy cut short still opens (a truncated clip only a full demux notices)."""
    with tempfile.TemporaryDirectory() as folder:
        path = pathlib.Path(folder) / "clip.mp4"
        options = {"movflags": "faststart"} if faststart else {}
        with av.open(str(path), "w", format="mp4", options=options) as container:
            stream = container.add_stream(codec, rate=fps)
            stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
            stream.options = CODEC_OPTIONS[codec]
            for image in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        return path.read_bytes()
