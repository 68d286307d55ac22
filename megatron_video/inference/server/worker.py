"""The sampling worker: takes queued jobs from the job table one at a time and writes their mp4s.

It talks to a `Generator` (request -> uint8 frames). On one process that is a VideoGenerator; behind
a group of ranks (context-parallel and CFG-parallel sampling) it is a `GroupGenerator` on rank 0,
which hands each request to the other ranks (`follow_requests` on each of them) before sampling its
own part, so every rank runs the same sampler on the same request while the front end and the job
table stay on rank 0.
"""
from __future__ import annotations

import logging
import pathlib
import threading
import time
from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch
import torch.distributed as dist

from megatron_video.inference.generator import GenerationRequest
from megatron_video.inference.server.jobs import JobStore
from megatron_video.inference.video_io import write_mp4

log = logging.getLogger(__name__)


class Generator(Protocol):
    def generate(self, request: GenerationRequest) -> np.ndarray | None:
        """uint8 frames [T, H, W, 3] (None on a rank that only helps sample)."""


class GroupGenerator:
    """Rank 0's side of a group of sampling ranks: broadcast the request, then sample with them."""

    def __init__(self, local: Generator, group: dist.ProcessGroup | None = None):
        self.local, self.group = local, group
        self.source = dist.get_global_rank(group, 0) if group is not None else 0

    def generate(self, request: GenerationRequest) -> np.ndarray:
        dist.broadcast_object_list([request.to_dict()], src=self.source, group=self.group)
        return self.local.generate(request)

    def close(self) -> None:
        """Release the other ranks from `follow_requests`."""
        dist.broadcast_object_list([None], src=self.source, group=self.group)


def follow_requests(local: Generator, group: dist.ProcessGroup | None = None) -> int:
    """The other ranks' side: sample each request rank 0 broadcasts, until it closes; returns the count."""
    source = dist.get_global_rank(group, 0) if group is not None else 0
    served = 0
    while True:
        message: list = [None]
        dist.broadcast_object_list(message, src=source, group=group)
        if message[0] is None:
            return served
        local.generate(GenerationRequest(**message[0]))
        served += 1


class Worker:
    """One thread that runs queued jobs in order; `on_finished(status, seconds)` feeds the metrics."""

    def __init__(self, store: JobStore, generator: Generator, videos_dir: pathlib.Path,
                 on_finished: Callable[[str, float], None] = lambda status, seconds: None):
        self.store, self.generator, self.videos_dir = store, generator, videos_dir
        self.on_finished = on_finished
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mvideo-worker", daemon=True)
        self.busy = False
        self._abandoned = False  # stop() gave up waiting: the running job's result is not recorded
        # The current CUDA device is per thread: the worker thread samples on the one this rank chose.
        self._cuda_device = torch.cuda.current_device() if torch.cuda.is_available() else None

    def start(self) -> None:
        requeued = self.store.requeue_interrupted()
        if requeued:
            log.info("re-queued %d job(s) interrupted by the last shutdown", requeued)
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def notify(self) -> None:
        """A job was queued: wake the worker if it sleeps."""
        self._wake.set()

    def stop(self, grace_s: float) -> bool:
        """Take no new job; wait up to `grace_s` for the running one. True if the worker stopped
        (False: a job was still running; it stays marked running and is re-queued at the next start)."""
        self._stopping.set()
        self._wake.set()
        self._thread.join(grace_s)
        self._abandoned = self._thread.is_alive()
        return not self._abandoned

    def _run(self) -> None:
        if self._cuda_device is not None:
            torch.cuda.set_device(self._cuda_device)
        while not self._stopping.is_set():
            job = self.store.claim_next()
            if job is None:
                self._wake.wait(timeout=1.0)
                self._wake.clear()
                continue
            self.busy = True
            started = time.perf_counter()
            try:
                request = GenerationRequest(**job.request)
                frames = self.generator.generate(request)
                if self._abandoned:
                    return
                path = write_mp4(frames, self.videos_dir / f"{job.id}.mp4", request.fps)
                self.store.complete(job.id, str(path))
                status = "completed"
            except Exception as err:  # a failed job is reported through its status; the worker goes on
                log.exception("job %s failed", job.id)
                self.store.fail(job.id, f"{type(err).__name__}: {err}")
                status = "failed"
            finally:
                self.busy = False
            self.on_finished(status, time.perf_counter() - started)
