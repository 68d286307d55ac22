"""CPU video I/O through PyAV: chunked streaming decode and in-memory libx264 encode to MP4."""
from __future__ import annotations

import io
from collections.abc import Iterator

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from curator.storage import open_for_decode
from curator.video.frames import Chunk, area_resize, frame_rate, rgb_to_i420

# FFmpeg's AVColorSpace and AVColorRange codes for BT.601 (SMPTE 170M) and limited ("MPEG") range.
AVCOL_SPC_SMPTE170M = 6
AVCOL_RANGE_MPEG = 1


def decode_chunks(source: str, chunk_frames: int, start_frame: int = 0, end_frame: int | None = None,
                  size: tuple[int, int] | None = None, indices: np.ndarray | None = None,
                  frame_pts: np.ndarray | None = None, keep: bool = False,
                  keep_size: tuple[int, int] | None = None) -> Iterator[Chunk]:
    """Yield Chunks (frame indices, RGB uint8 frames (n, h, w, 3), timestamps) of [start_frame, end_frame).

    A frame's index is its position in presentation order from the first decoded frame. Memory stays
    at one chunk. Frames come at `size=(h, w)` (full resolution when None); with sorted `indices`,
    only those frames are converted (all are still decoded). `frame_pts`, the timestamps a full
    pass recorded for frames [start_frame, end_frame), allows an exact seek to the range; without
    it the range is reached by decoding from the start, because timestamps turned into indices
    through an average frame rate drift on real files.
    With `keep`, each chunk also carries the frames at `keep_size` (full resolution when None) in
    `Chunk.kept`, made from the same decoded picture: one decode serves both uses.
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
        same = keep and keep_size == size
        # One reformatter for the whole pass keeps its swscale context (frame.to_ndarray(...) would
        # build one per frame, many times slower on small frames).
        convert = VideoReformatter()
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
            frames, larger = _convert(convert, frame, size, keep and not same, keep_size)
            chunk.append(frames)
            if larger is not None:
                kept.append(larger)
            if len(chunk) == chunk_frames:
                yield _chunk(chunk_indices, chunk, chunk_pts, kept, keep, same)
                chunk, chunk_indices, chunk_pts, kept = [], [], [], []
        if chunk:
            yield _chunk(chunk_indices, chunk, chunk_pts, kept, keep, same)


def _convert(convert: VideoReformatter, frame: av.VideoFrame, size: tuple[int, int] | None, keep: bool,
             keep_size: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The frame as RGB at `size`, and with `keep` also at `keep_size` (else None).

    swscale converts at the source size only: its unscaled YUV -> RGB path is faster than its
    scaling one even at a quarter of the pixels. OpenCV then shrinks; the smaller output is made from
    the larger when that still holds enough pixels. threads=1: swscale's default spawns a thread
    per core for every frame, and the workers already keep the cores busy.
    """
    rgb = convert.reformat(frame, format="rgb24", threads=1).to_ndarray()
    if not keep:
        return area_resize(rgb, size), None
    large = area_resize(rgb, keep_size)
    covers = size is not None and large.shape[0] >= size[0] and large.shape[1] >= size[1]
    return area_resize(large if covers else rgb, size), large


def _chunk(indices: list[int], frames: list[np.ndarray], pts: list[int], kept: list[np.ndarray], keep: bool,
           same: bool) -> Chunk:
    stacked = np.stack(frames)
    return Chunk(np.array(indices), stacked, np.array(pts),
                 (stacked if same else np.stack(kept)) if keep else None)


def encode_h264(frames: np.ndarray, fps: float, crf: int = 23, preset: str = "veryfast",
                threads: int = 0) -> bytes:
    """Encode RGB uint8 frames (n, h, w, 3) as an H.264 MP4 held in memory.

    The frames reach libx264 as yuv420p converted by `rgb_to_i420` (one batched OpenCV pass, 2x2
    block-mean chroma): handing PyAV RGB frames makes it run swscale per frame, which cost more
    than the encode itself. The stream is tagged BT.601 limited range, which is what the
    conversion produces, so players need not guess.
    """
    return encode_i420(rgb_to_i420(frames), fps, crf, preset, threads)


def x264_options(width: int, crf: int, preset: str) -> dict[str, str]:
    """libx264's options for a frame `width` pixels wide.

    libx264's macroblock-tree rate control reads uninitialised stack memory when the frame is an
    odd number of macroblocks (16 px) wide (valgrind: a conditional jump on a value from a stack
    allocation inside x264_encoder_encode; with mbtree=0 the report is gone, and even widths never
    show it). The bytes then depend on what ran on the encoding thread before, so the same clip
    encoded on a curating thread and in an encoder process differed. At those widths mbtree is off:
    the same frames always give the same bytes.
    """
    options = {"crf": str(crf), "preset": preset}
    if -(-width // 16) % 2:
        options["x264-params"] = "mbtree=0"
    return options


def encode_i420(planes: np.ndarray, fps: float, crf: int = 23, preset: str = "veryfast",
                threads: int = 0) -> bytes:
    """Encode I420 frames (n, h * 3 // 2, w), as `rgb_to_i420` lays them out, as an H.264 MP4."""
    rate = frame_rate(fps)
    height, width = int(planes.shape[1]) * 2 // 3, int(planes.shape[2])
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.height, stream.width = height, width
        stream.pix_fmt = "yuv420p"
        stream.options = x264_options(width, crf, preset)
        context = stream.codec_context
        context.thread_count = threads
        context.time_base = 1 / rate
        context.colorspace, context.color_range = AVCOL_SPC_SMPTE170M, AVCOL_RANGE_MPEG
        for i, plane in enumerate(planes):
            frame = av.VideoFrame.from_ndarray(plane, format="yuv420p")
            # Without explicit pts/time_base, re-timed frames get the source's timestamps.
            frame.pts = i
            frame.time_base = 1 / rate
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buffer.getvalue()
