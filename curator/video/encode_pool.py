"""libx264 encodes in worker processes, for workers that are threads of one process (the local
executor's, also inside each Ray actor).

PyAV holds the GIL through most of each frame's encode, so encodes on N threads of one process do
not run N times as fast (benchmarks/notes.md, "Figures behind the curator's code"); in processes
they scale with the cores. Frames cross as I420 (half the bytes of RGB), converted by the
calling thread (on the GPU where the frames are; on the CPU through OpenCV, which releases the
GIL), and put in a shared-memory slot that the encoder process maps (curator/video/host_slots.py):
through the pool's own queue, every clip (40 MB at 120 x 352 x 640) would be pickled by its one
feeder thread into one pipe, which serialised the run (slower than threads). The MP4
bytes come back through the queue (a few hundred kB).
"""
from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from curator.errors import RunFault
from curator.tracing import span
from curator.video import pyav_io
from curator.video.host_slots import HostSlots, read_slot
from megatron_video.lifetime import exit_with

# Encoder processes yield the cores to the curating process: a decode thread holding the GIL (or
# woken to take it) that waits behind an x264 thread stalls every other thread of the run (niceness
# and SCHED_IDLE were each faster than the one before: benchmarks/notes.md, "Figures behind the
# curator's code"). Niceness only weights the encoders' share; a niced process still keeps a core until
# the scheduler's wake-up granularity has passed, while a SCHED_IDLE one gives it up at once.
ENCODER_NICENESS = 10


def lower_priority(priority: str) -> None:
    """Put this process at an encoder's CPU priority ("idle", "nice" or "normal": CurateConfig's
    `encoder_priority`); runs in each encoder process as it starts."""
    if priority == "idle" and hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            return
        except OSError:  # a seccomp profile may refuse it: niceness is the next best
            pass
    if priority in ("idle", "nice"):
        os.nice(ENCODER_NICENESS)


def start_encoder(priority: str, client_pid: int) -> None:
    """Initializer of each encoder process: the encoder's CPU priority, and an end with its client."""
    lower_priority(priority)
    # Its parent is the fork server, and it holds the pool's queues and the fork server's
    # liveness pipe itself: only the client's own end can tell it to go.
    exit_with(client_pid)


def can_start_processes() -> bool:
    """Whether this interpreter can start encoder processes. Each one first re-runs the main module
    from its file (multiprocessing's preparation, for what the parent's `__main__` defines), and a
    main read from stdin (`python -`) names a file that does not exist ('<stdin>'): every process
    then dies at start and every clip would fail. A notebook's or `python -c`'s main has no file
    and is skipped, so those can."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    return getattr(main, "__spec__", None) is not None or path is None or os.path.exists(path)


def _started() -> bool:
    return True


def _encode_slot(path: str, shape: tuple[int, ...], fps: float, crf: int, preset: str,
                 threads: int) -> tuple[bytes, float]:
    start = time.process_time()
    mp4 = pyav_io.encode_i420(read_slot(path, shape), fps, crf, preset, threads)
    return mp4, time.process_time() - start


class EncodePool:
    """A pool of `processes` encoder processes; `encode` blocks its caller, not the others.

    An encoder process that dies (killed for memory, a crash in the encoder) breaks the whole pool
    and every clip in flight with it: the pool is started again once per break and each of those
    clips is tried once more, so only a clip that breaks it twice fails (and is recorded as failed).
    A pool whose new processes cannot start at all is the run's fault (`RunFault`)."""

    def __init__(self, processes: int, priority: str = "idle"):
        self._processes = processes
        self._priority = priority
        self._lock = threading.Lock()
        self._generation = 0  # pools started so far: a break is repaired once, by its first witness
        self._slots = HostSlots()
        self._pool = self._start()

    def _start(self) -> ProcessPoolExecutor:
        # Never forked from this process, which may hold a CUDA context and many threads: forked
        # from a fork server, a clean interpreter started once per process that has already imported
        # the encoder, so a pool costs one interpreter's imports, not one per encoder process
        # (each spawned interpreter would import everything again at the start of every run).
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["__main__", "curator.video.encode_pool"])
        pool = ProcessPoolExecutor(self._processes, mp_context=context, initializer=start_encoder,
                                   initargs=(self._priority, os.getpid()))
        # Start the processes now, so their start overlaps the first videos' decode.
        for _ in range(self._processes):
            pool.submit(_started)
        return pool

    def _replace(self, broken_generation: int) -> None:
        """Start a new pool in place of the broken one (unless another thread already has)."""
        with self._lock:
            if broken_generation != self._generation:
                return
            self._pool.shutdown(wait=False, cancel_futures=True)
            pool = self._start()
            try:
                pool.submit(_started).result()
            except BrokenProcessPool as exc:
                pool.shutdown(wait=False)
                raise RunFault(f"the encoder processes cannot start ({exc}); if a script calls curate(), call it "
                               "under `if __name__ == '__main__':`, since each encoder process first imports "
                               "the main module") from exc
            self._pool, self._generation = pool, self._generation + 1

    def _encode_once(self, args: tuple) -> tuple[bytes, float]:
        with self._lock:
            pool, generation = self._pool, self._generation
        try:
            return pool.submit(_encode_slot, *args).result()
        except BrokenProcessPool:
            self._replace(generation)
            raise

    def encode(self, planes: Any, fps: float, crf: int, preset: str, threads: int) -> tuple[bytes, float]:
        """The MP4 of I420 `planes` (numpy, or a torch tensor on a GPU), and the CPU seconds the
        encoder process spent on it (its children are the fork server's, so the caller's own
        resource accounting never sees them)."""
        with self._slots.holding(planes) as (path, shape), span("encoder_call"):
            args = (path, shape, fps, crf, preset, threads)
            try:
                return self._encode_once(args)
            except BrokenProcessPool:
                try:  # in flight when the pool broke: once more, on the new pool
                    return self._encode_once(args)
                except BrokenProcessPool as exc:
                    raise RuntimeError(f"an encoder process died twice while encoding this clip ({exc})") from exc

    def close(self) -> None:
        self._pool.shutdown()
        self._slots.close()
