"""Keep the libraries' own thread pools from oversubscribing a machine whose cores the workers share.

OpenCV, torch and the BLAS/OpenMP runtimes each start a thread per core for a single call. With
`workers` threads calling them at once the machine runs `workers` times more threads than cores,
and OpenBLAS/OpenMP threads spin-wait between calls, burning CPU time the encoder processes and
the decoders need (benchmarks/notes.md, "Figures behind the curator's code"). A Ray actor runs
the local executor, which applies the same caps inside it.
"""
from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Iterator
from types import ModuleType

import cv2
from threadpoolctl import threadpool_limits

from megatron_video.cpu_cores import available_cores


def imported(name: str) -> ModuleType | None:
    """The module if something has started importing it, else None. Through `import`, which waits
    for another thread still importing it (the TransNetV2 loader starts at stage set-up): the
    half-initialised module in sys.modules may lack the very attribute wanted."""
    return importlib.import_module(name) if name in sys.modules else None


def per_worker(workers: int) -> int:
    """Library threads each of `workers` concurrent workers may use: the cores shared out."""
    return max(1, available_cores() // workers)


def limit_this_thread(count: int) -> None:
    """Cap the OpenMP threads a call from this thread starts: OpenMP keeps its thread count per
    calling thread, so each worker thread runs this itself (a ThreadPoolExecutor initializer)."""
    threadpool_limits(count, user_api="openmp")


@contextlib.contextmanager
def limited_library_threads(count: int) -> Iterator[None]:
    """The process-wide pools (OpenCV, BLAS, torch's intra-op) capped at `count` threads while the
    block runs, then restored: a demo trains in the same process after curating."""
    torch = imported("torch")  # a CPU run need not load it
    cv_before = cv2.getNumThreads()
    torch_before = torch.get_num_threads() if torch is not None else None
    cv2.setNumThreads(count)
    if torch is not None:
        torch.set_num_threads(count)
    try:
        with threadpool_limits(count, user_api="blas"):
            yield
    finally:
        cv2.setNumThreads(cv_before)
        if torch_before is not None:
            torch.set_num_threads(torch_before)
