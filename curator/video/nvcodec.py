"""GPU video I/O through PyNvVideoCodec: NVDEC decode to CUDA tensors and NVENC H.264 encode to MP4.

PyNvVideoCodec cannot even be imported without an NVIDIA driver, so it is imported inside the
functions; `available()` tells the device resolver whether this path can run here.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from curator.tracing import span
from curator.video.frames import Chunk, frame_rate, resize_batch, to_host


def _nvc() -> Any:
    import PyNvVideoCodec as nvc

    return nvc


_decoders = threading.local()


@dataclasses.dataclass
class _Session:
    decoder: Any
    stream: Any
    reusable: bool = True


@contextlib.contextmanager
def _thread_decoder(source: str, gpu_id: int) -> Iterator[_Session]:
    """This thread's decoder, re-pointed at `source`, and the CUDA stream (torch's) it works on.

    Creating a SimpleDecoder per video and dropping it afterwards holds the GIL for a long stretch
    per video, which stalls every other worker thread of the process; `reconfigure_decoder` reuses
    the NVDEC session for the next file, as NVIDIA's cached-decoder benchmark does. The decoder
    leaves the cache while in use (a nested decode on the same thread makes its own) and goes
    back only after a clean pass, so one that raised on a corrupt file, or reached the end of a
    stream shorter than its container said, is never reused.

    The decoder works on a stream of the device's highest priority: it converts every frame with
    small kernels and copies, which otherwise queue behind the other workers' resizes and slow every
    decode several times over. The decoder neither owns nor
    destroys the stream, so one from torch's pool serves.
    """
    import torch

    nvc = _nvc()
    cache = _decoders.__dict__.setdefault("by_gpu", {})
    decoder, stream = cache.pop(gpu_id, (None, None))
    if decoder is None:
        stream = torch.cuda.Stream(device=gpu_id, priority=-100)  # clamped to the highest the device has
        decoder = nvc.SimpleDecoder(source, gpu_id=gpu_id, cuda_stream=stream.cuda_stream, use_device_memory=True,
                                    output_color_type=nvc.OutputColorType.RGB)
    else:
        decoder.reconfigure_decoder(source)
    session = _Session(decoder, stream)
    yield session
    if session.reusable:
        cache[gpu_id] = (decoder, stream)


def available() -> bool:
    """True where a CUDA device is visible and PyNvVideoCodec loads against its driver."""
    try:
        import torch

        if not torch.cuda.is_available():
            return False
        _nvc()
    except (ImportError, OSError, RuntimeError):
        return False
    return True


@functools.cache
def nvenc_available(gpu_id: int = 0) -> bool:
    """True where the GPU has an NVENC engine: data-centre parts such as H100 and H200 decode in
    hardware but have no encoder, and opening a session is the only reliable test."""
    if not available():
        return False
    nvc = _nvc()

    def probe() -> bool:
        try:
            nvc.CreateEncoder(64, 64, "ABGR", True, codec="h264", gpu_id=gpu_id)
        except Exception:  # noqa: BLE001 - PyNvVCException (NV_ENC_ERR_NO_ENCODE_DEVICE) is not importable by name
            return False
        return True

    # On its own thread: a failed CreateEncoder leaves a CUDA context of its own current on the
    # calling thread, and torch would then run that thread's work in it, where streams made in the
    # device's primary context (the decoders') are "invalid resource handles".
    with ThreadPoolExecutor(1, thread_name_prefix="nvenc-probe") as pool:
        return pool.submit(probe).result()


def decode_chunks(source: str, chunk_frames: int, start_frame: int = 0, end_frame: int | None = None,
                  size: tuple[int, int] | None = None, indices: np.ndarray | None = None,
                  gpu_id: int = 0, keep: bool = False, keep_size: tuple[int, int] | None = None) -> Iterator[Chunk]:
    """Yield Chunks (frame indices, uint8 CUDA tensor (n, h, w, 3) RGB), like the PyAV decoder.

    NVDEC indexes frames itself, so timestamps are neither needed nor returned.

    NVDEC converts to interleaved RGB on the GPU, on the decoder's own stream; each frame reaches
    torch through DLPack without a copy. The decoder recycles those output surfaces on its next
    call, so every batch is first stacked, on that stream, into a tensor the caller's stream owns,
    and the caller's stream waits for the stack before its own work on the batch.
    With `keep`, `Chunk.kept` holds the same frames resized on the GPU to `keep_size` (full
    resolution when None), still CUDA tensors: one decode serves analysis and clip output.
    """
    with _thread_decoder(source, gpu_id) as session:
        yield from _decode(session, chunk_frames, start_frame, end_frame, size, indices, gpu_id, keep, keep_size)


def _end_of_stream(exc: Exception) -> bool:
    """PyNvVideoCodec's error for a frame index past the stream's real end: the container's frame
    count (`len(decoder)`) is only what its header says."""
    return "end of stream" in str(exc).lower()


def _decode(session: _Session, chunk_frames: int, start_frame: int, end_frame: int | None,
            size: tuple[int, int] | None, indices: np.ndarray | None, gpu_id: int, keep: bool,
            keep_size: tuple[int, int] | None) -> Iterator[Chunk]:
    """The frames that exist: a read past the stream's real end ends the pass like its last frame."""
    import torch

    decoder, stream = session.decoder, session.stream
    total = len(decoder)
    end = total if end_frame is None else min(end_frame, total)
    wanted = None if indices is None else indices[(indices >= start_frame) & (indices < end)]
    if wanted is not None and len(wanted) == 0:
        return
    # Decode sequentially from the first wanted frame: fetching frames one index at a time would
    # restart from a keyframe for each of them.
    index = start_frame if wanted is None else int(wanted[0])
    seek, batch_limit = True, chunk_frames
    with torch.cuda.device(gpu_id):
        consumer = torch.cuda.current_stream()
        while index < end:
            batch = min(batch_limit, end - index)
            try:
                if seek:  # always seek first: a reused decoder may stand where the last video left it
                    decoder.seek_to_index(index)
                    seek = False
                with span("decode_call"):
                    frames = decoder.get_batch_frames(batch)
            except Exception as exc:
                if not _end_of_stream(exc):
                    raise
                session.reusable = False
                if batch == 1:
                    break
                # The stream ends inside this batch, and the call returned none of it: the rest of
                # the frames one at a time, from where the batch began.
                seek, batch_limit = True, 1
                continue
            if not frames:
                break
            positions = np.arange(index, index + len(frames))
            index += len(frames)
            wanted_mask = np.ones(len(frames), dtype=bool) if wanted is None else np.isin(positions, wanted)
            if not wanted_mask.any():
                continue
            full = _take_over([f for f, k in zip(frames, wanted_mask, strict=True) if k], stream, consumer)
            del frames
            batch = full if size is None else resize_batch(full, size, keep_device=True)
            kept = None
            if keep:
                kept = full if keep_size is None else resize_batch(full, keep_size, keep_device=True)
            del full
            yield Chunk(positions[wanted_mask], batch, None, kept)


def _take_over(frames: list[Any], stream: Any, consumer: Any) -> Any:
    """Stack the decoder's output surfaces into a tensor allocated for `consumer`, on the decoder's
    stream, and make `consumer` wait for the stack.

    The copy runs on the decoder's stream so it is ordered before that stream's next conversion
    overwrites the surfaces. The tensor is allocated on the consumer's stream and the decoder's
    stream first waits for the consumer (the memory may still be in use there by work queued
    before it was freed); once the consumer has waited for the copy in turn, every use of the
    tensor is ordered on the consumer, so the caching allocator never has to track the decoder's
    stream.
    """
    import torch
    from torch.utils.dlpack import from_dlpack

    # Each surface through the decoder's own `__dlpack__` and torch's capsule converter, not
    # `torch.from_dlpack(frame)`: torch first offers DLPack 1.0 (`max_version`), which PyNvVideoCodec
    # 2.2's binding rejects with a TypeError that pybind11 formats in full, with the GIL held,
    # before torch retries: an order of magnitude more per frame than this way, and a large share
    # of the decode's GIL time (benchmarks/notes.md, "Figures behind the curator's code").
    handle = stream.cuda_stream
    views = [from_dlpack(frame.__dlpack__(stream=handle)) for frame in frames]
    full = torch.empty((len(views), *views[0].shape), dtype=views[0].dtype, device=views[0].device)
    stream.wait_stream(consumer)
    with torch.cuda.stream(stream):
        torch.stack(views, out=full)
    consumer.wait_stream(stream)
    return full


def encode_h264(frames: Any, fps: float, gpu_id: int = 0, preset: str = "P4") -> bytes:
    """Encode RGB uint8 frames (n, h, w, 3; numpy or torch) with NVENC, muxed to MP4 in memory.

    NVENC takes packed 8-bit RGBA as "ABGR" (little-endian word order) and converts to YUV itself.
    PyNvVideoCodec's muxer writes only to a path, so the MP4 passes through a temporary file.
    """
    nvc = _nvc()
    host = to_host(frames)
    n, height, width = host.shape[:3]
    rgba = np.empty((n, height, width, 4), dtype=np.uint8)
    rgba[..., :3] = host
    rgba[..., 3] = 255
    rate = frame_rate(fps)
    encoder = nvc.CreateEncoder(width, height, "ABGR", True, codec="h264", preset=preset, gpu_id=gpu_id,
                                fps=str(round(float(rate))), gop=str(max(1, round(float(rate)))), bf="0")
    fd, path = tempfile.mkstemp(suffix=".mp4")
    os.close(fd)
    try:
        # Time base 1/fps: one tick per frame, exact for fractional rates such as 24000/1001.
        muxer = nvc.FFmpegMuxer(file_path=path, media_format=nvc.GetMediaFormat(path), codec="h264",
                                width=width, height=height, fps_num=rate.numerator, fps_den=rate.denominator,
                                timebase_num=rate.denominator, timebase_den=rate.numerator,
                                extradata=encoder.GetSequenceParams())
        muxer.SetUniformPtsIncrement(1)
        for i in range(n):
            params = nvc.NV_ENC_PIC_PARAMS()
            params.inputTimeStamp = i
            for packet in encoder.Encode(rgba[i].reshape(-1), params):
                muxer.MuxVideoPacket(bytes(packet["data"]), packet["picture_type"], packet["timestamp"])
        for packet in encoder.EndEncode():
            muxer.MuxVideoPacket(bytes(packet["data"]), packet["picture_type"], packet["timestamp"])
        muxer.Finalize()
        with open(path, "rb") as f:
            return f.read()
    finally:
        os.unlink(path)
