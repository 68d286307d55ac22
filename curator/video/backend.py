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


def decode_range(source: str, device: str, chunk_frames: int, start_frame: int = 0,
                 end_frame: int | None = None, size: tuple[int, int] | None = None,
                 indices: np.ndarray | None = None, frame_pts: np.ndarray | None = None, keep: bool = False,
                 keep_size: tuple[int, int] | None = None) -> Iterator[Chunk]:
    """Chunks of frames [start_frame, end_frame), or of `indices` within it (see pyav_io.decode_chunks);
    with `keep`, each chunk also carries the frames at `keep_size` (CUDA tensors on the GPU path).
    NVDEC reads local files only, so remote inputs and CPU workers stream through PyAV."""
    if use_gpu(device) and storage.is_local(source):
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
