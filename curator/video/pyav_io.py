"""CPU video I/O through PyAV: chunked streaming decode and in-memory libx264 encode to MP4."""
from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from curator.storage import open_for_decode
from curator.video.frames import Chunk, frame_rate


def decode_chunks(source: str, chunk_frames: int, start_frame: int = 0, end_frame: int | None = None,
                  size: tuple[int, int] | None = None, indices: np.ndarray | None = None,
                  frame_pts: np.ndarray | None = None, keep: bool = False,
                  keep_size: tuple[int, int] | None = None) -> Iterator[Chunk]:
    """Yield Chunks (frame indices, RGB uint8 frames (n, h, w, 3), timestamps) of [start_frame, end_frame).

    A frame's index is its position in presentation order from the first decoded frame. Memory stays
    at one chunk. `size=(h, w)` scales inside swscale, far cheaper than converting full frames to RGB
    and resizing afterwards; with sorted `indices`, only those frames are converted (all are still
    decoded). `frame_pts`, the timestamps a full pass recorded for frames [start_frame, end_frame),
    allows an exact seek to the range; without it the range is reached by decoding from the start,
    because timestamps turned into indices through an average frame rate drift on real files.
    With `keep`, each chunk also carries the frames at `keep_size` (full resolution when None) in
    `Chunk.kept`, converted by swscale from the same decoded picture: one decode serves both uses.
    """
    wanted = None if indices is None else {int(i) for i in indices}
    pts_index = None if frame_pts is None else {int(p): start_frame + i for i, p in enumerate(frame_pts)}
    # Not frame_pts[-1]: AVI files with packed B-frames hand out timestamps slightly out of order.
    last_pts = None if frame_pts is None else int(frame_pts.max())
    with av.open(open_for_decode(source)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if pts_index is not None and start_frame > 0:
            container.seek(int(frame_pts[0]), stream=stream, backward=True, any_frame=False)
        reformat: dict[str, Any] = {"format": "rgb24"}
        if size is not None:
            reformat.update(height=size[0], width=size[1], interpolation="AREA")
        keep_format: dict[str, Any] = {"format": "rgb24"}
        if keep_size is not None:
            keep_format.update(height=keep_size[0], width=keep_size[1], interpolation="AREA")
        same = keep and keep_format == reformat
        # One reformatter per output size for the whole pass: each keeps its swscale context, where
        # frame.to_ndarray(...) would build a new one for every frame (10-30x slower on small frames).
        convert, convert_kept = VideoReformatter(), VideoReformatter()
        chunk: list[np.ndarray] = []
        kept: list[np.ndarray] = []
        chunk_indices: list[int] = []
        chunk_pts: list[int] = []
        counter = 0
        for frame in container.decode(stream):
            if pts_index is not None:
                if frame.pts is not None and frame.pts > last_pts:
                    break
                index = pts_index.get(frame.pts, -1)
            else:
                index = counter
            counter += 1
            if index < start_frame or (wanted is not None and index not in wanted):
                continue
            if end_frame is not None and index >= end_frame:
                break
            chunk_indices.append(index)
            chunk_pts.append(frame.pts if frame.pts is not None else index)
            chunk.append(convert.reformat(frame, **reformat).to_ndarray())
            if keep and not same:
                kept.append(convert_kept.reformat(frame, **keep_format).to_ndarray())
            if len(chunk) == chunk_frames:
                yield _chunk(chunk_indices, chunk, chunk_pts, kept, keep, same)
                chunk, chunk_indices, chunk_pts, kept = [], [], [], []
        if chunk:
            yield _chunk(chunk_indices, chunk, chunk_pts, kept, keep, same)


def _chunk(indices: list[int], frames: list[np.ndarray], pts: list[int], kept: list[np.ndarray], keep: bool,
           same: bool) -> Chunk:
    stacked = np.stack(frames)
    return Chunk(np.array(indices), stacked, np.array(pts),
                 (stacked if same else np.stack(kept)) if keep else None)


def encode_h264(frames: np.ndarray, fps: float, crf: int = 23, preset: str = "veryfast",
                threads: int = 0) -> bytes:
    """Encode RGB uint8 frames (n, h, w, 3) as an H.264 MP4 held in memory."""
    rate = frame_rate(fps)
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.height, stream.width = int(frames.shape[1]), int(frames.shape[2])
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": preset}
        stream.codec_context.thread_count = threads
        stream.codec_context.time_base = 1 / rate
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            # Without explicit pts/time_base, re-timed frames get the source's timestamps.
            frame.pts = i
            frame.time_base = 1 / rate
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buffer.getvalue()
