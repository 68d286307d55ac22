"""One choice of decoder and encoder per worker: NVDEC/NVENC where a GPU is usable, PyAV otherwise."""
from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Iterator

import numpy as np

from curator import storage
from curator.video import nvcodec, pyav_io
from curator.video.frames import Chunk
from curator.video.nvdec_support import nvdec_refusal

log = logging.getLogger(__name__)
_thread_state = threading.local()


@functools.cache
def use_gpu(device: str) -> bool:
    """Resolve cfg.device: "auto" takes the GPU path only when NVDEC can actually run here."""
    if device == "cpu":
        return False
    ok = nvcodec.available()
    if device == "cuda" and not ok:
        raise RuntimeError("device=cuda but no CUDA device with PyNvVideoCodec is usable")
    log.info("curate backend device=%s gpu=%s", device, ok)
    return ok


def worker_stream(device: str) -> contextlib.AbstractContextManager:
    """On the GPU path, make the calling thread's own CUDA stream current (on CPU: nothing).

    Worker threads would otherwise all queue on the default stream, where every host copy (a sync
    of the current stream) waits for the decode and resize work of all the other workers too. Work
    that crosses threads stays ordered: the decode stage waits for its analysis frames' host copies
    after the last chunk's kept frames were queued, so its stream is idle before any clip reads them.
    """
    if not use_gpu(device):
        return contextlib.nullcontext()
    import torch

    if getattr(_thread_state, "stream", None) is None:
        _thread_state.stream = torch.cuda.Stream()
    return torch.cuda.stream(_thread_state.stream)


NVDEC, PYAV = "nvdec", "pyav"


def choose_decoder(device: str, source: str, codec: str, pix_fmt: str | None, width: int, height: int,
                   container: str, nvdec_codecs: list[str]) -> tuple[str, str]:
    """(decoder, why not NVDEC) for one input: NVDEC where the GPU path runs and takes the stream
    (curator/video/nvdec_support.py), PyAV otherwise; the reason is '' where the CPU was the only
    path asked for. NVDEC reads local files only, so remote inputs stream through PyAV."""
    if not use_gpu(device):
        return PYAV, ""
    if not storage.is_local(source):
        return PYAV, "remote input (NVDEC reads local files only)"
    refusal = nvdec_refusal(codec, pix_fmt, width, height, container, nvdec_codecs)
    return (PYAV, refusal) if refusal else (NVDEC, "")


def decode_range(source: str, decoder: str, chunk_frames: int, start_frame: int = 0,
                 end_frame: int | None = None, size: tuple[int, int] | None = None,
                 indices: np.ndarray | None = None, frame_pts: np.ndarray | None = None, keep: bool = False,
                 keep_size: tuple[int, int] | None = None) -> Iterator[Chunk]:
    """Chunks of frames [start_frame, end_frame), or of `indices` within it (see pyav_io.decode_chunks),
    from `decoder` (NVDEC or PYAV, as `choose_decoder` chose for the input); with `keep`, each chunk
    also carries the frames at `keep_size` (CUDA tensors from NVDEC)."""
    if decoder == NVDEC:
        return nvcodec.decode_chunks(source, chunk_frames, start_frame, end_frame, size, indices,
                                     keep=keep, keep_size=keep_size)
    return pyav_io.decode_chunks(source, chunk_frames, start_frame, end_frame, size, indices, frame_pts,
                                 keep=keep, keep_size=keep_size)


@functools.cache
def use_nvenc(device: str) -> bool:
    """NVENC only on GPUs that have the engine; others (H100, H200) encode with libx264."""
    ok = use_gpu(device) and nvcodec.nvenc_available()
    log.info("curate encoder device=%s encoder=%s", device, "nvenc" if ok else "libx264")
    return ok
