"""In-process executor: one thread pool for videos, another for their clips.

No Ray: starting a cluster runtime costs more time and memory than a laptop demo's whole run.
Decoding, OpenCV and torch release the GIL, so threads overlap well; PyAV's libx264 encode does
not, so the encode stage hands it to a process pool (curator/video/encode_pool.py). Stages are set
up before the first task and torn down when the run ends, even a failed one. A video's stages up
to the clip fan-out form one job and each clip's remaining stages another, so one long video does
not serialise the run. The two kinds of job run on separate pools: on one shared pool a thread
waiting for its clip's encode is a thread not decoding, and decode is the stage everything else
has to keep up with (benchmarks/notes.md, "Figures behind the curator's code"). Clips get
`workers` threads; videos as many, except on the NVDEC path, where `video_threads` stops at
`nvdec_sessions`. Each pool holds at most one job more than its threads, and at most
`max_in_flight` videos are open at once, which bounds the frames in memory. While the pools run,
the libraries' own thread pools are capped to the cores each worker thread's share
(curator/executors/thread_limits.py). The writer stays on the calling thread: it owns the ledger.
"""
from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from curator.config import CurateConfig
from curator.executors.driver import deliver
from curator.executors.thread_limits import (
    limit_this_thread,
    limited_library_threads,
    per_worker,
)
from curator.pipeline import job_stages, run_depth_first
from curator.progress import RunProgress
from curator.stages.base import Stage, WorkerContext
from curator.stages.shard_writer import ShardWriterStage
from curator.tasks import ClipTask, Task, VideoTask
from curator.tracing import span
from curator.video.backend import use_gpu
from megatron_video.cpu_cores import available_cores


def video_threads(cfg: CurateConfig) -> int:
    """Threads for video jobs (probe, decode, shot detection): `workers`, and on the NVDEC path at
    most `nvdec_sessions`. There, more threads than the GPU has decode engines to keep busy only
    contend for the GIL (benchmarks/notes.md, "Figures behind the curator's code")."""
    return min(cfg.workers, cfg.nvdec_sessions) if use_gpu(cfg.device) else cfg.workers


def job_contexts(cfg: CurateConfig) -> tuple[WorkerContext, WorkerContext]:
    """The worker a video's stages run in (`video_threads` at once) and a clip's (`workers` at once):
    this process, whose cores all of them share."""
    cores, device = available_cores(), "cuda" if use_gpu(cfg.device) else "cpu"
    return WorkerContext(cores, video_threads(cfg), device), WorkerContext(cores, cfg.workers, device)


def setup_stages(cfg: CurateConfig, stages: list[Stage]) -> None:
    """Set every stage up for the pool of `run_jobs` that runs it."""
    for job, ctx in zip(job_stages(stages), job_contexts(cfg), strict=True):
        for stage in job:
            stage.setup(ctx)


class SourceFeed:
    """The inputs `run_jobs` takes videos from: all given up front, or put in batches while it runs
    (a Ray pipeline actor feeds the batches its driver sends into one long run, so no batch waits
    for the previous one's last encodes). `run_jobs` returns once the feed is closed and empty and
    everything taken from it is finished."""

    def __init__(self, sources: Iterable[str] = (), closed: bool = True) -> None:
        self._sources = deque(sources)
        self._closed = closed
        self._changed = threading.Condition()

    def put(self, sources: Iterable[str]) -> None:
        with self._changed:
            self._sources.extend(sources)
            self._changed.notify_all()

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def take(self) -> str | None:
        """The next input if one is waiting (never blocks)."""
        with self._changed:
            return self._sources.popleft() if self._sources else None

    def peek(self) -> str | None:
        """The input `take` would return next, left in the feed."""
        with self._changed:
            return self._sources[0] if self._sources else None

    def wait(self) -> bool:
        """Block until an input is waiting (True) or the feed is closed and empty (False)."""
        with self._changed:
            self._changed.wait_for(lambda: self._sources or self._closed)
            return bool(self._sources)


def run_local(cfg: CurateConfig, sources: list[str], stages: list[Stage], writer: ShardWriterStage,
              progress: RunProgress, alone: frozenset[str] = frozenset()) -> None:
    """Run `sources` (those in `alone` first, see `run_jobs`), each recorded in the ledger as in flight
    from its first job to its last, so a rerun after this process dies knows which inputs were."""
    setup_stages(cfg, stages)
    try:
        ordered = [s for s in sources if s in alone] + [s for s in sources if s not in alone]
        run_jobs(cfg, SourceFeed(ordered), stages, writer, progress, finished=writer.ledger.record_out_of_flight,
                 started=writer.ledger.record_start, alone=alone)
    finally:
        for stage in stages:
            stage.teardown()


def run_jobs(cfg: CurateConfig, feed: SourceFeed, stages: list[Stage], writer: ShardWriterStage,
             progress: RunProgress, finished: Callable[[str], None] | None = None,
             started: Callable[[str], None] | None = None, alone: frozenset[str] = frozenset()) -> None:
    """The feed's inputs through stages already set up, every finished or rejected task to
    `writer.process`; `started(source)` before an input's first job, `finished(source)` once nothing
    of it is left to run. An input in `alone` runs with nothing else in flight: one that was in flight
    when an earlier run died is run by itself, so a crash it causes again is its own."""
    video_stages, clip_stages = job_stages(stages)

    def run(stage_list: list[Stage], task: Task) -> list[Task]:
        with span("video_job" if isinstance(task, VideoTask) else "clip_job"):
            return list(run_depth_first(stage_list, task))

    clips: deque[ClipTask] = deque()
    running: dict[Future, tuple[str, bool]] = {}
    outstanding: Counter[str] = Counter()

    def busy(video_jobs: bool) -> int:
        return sum(is_video_job == video_jobs for _, is_video_job in running.values())

    def submit(pool: ThreadPoolExecutor, stage_list: list[Stage], task: Task, is_video_job: bool) -> None:
        running[pool.submit(run, stage_list, task)] = (task.source, is_video_job)
        outstanding[task.source] += 1

    video_workers = video_threads(cfg)
    # Both pools' threads call into the libraries at once: they share the cores out.
    threads = per_worker(video_workers + cfg.workers)
    limits = {"initializer": limit_this_thread, "initargs": (threads,)}
    with limited_library_threads(threads), \
            ThreadPoolExecutor(video_workers, thread_name_prefix="curate-video", **limits) as video_pool, \
            ThreadPoolExecutor(cfg.workers, thread_name_prefix="curate-clip", **limits) as clip_pool:
        while True:
            while clips and busy(video_jobs=False) < cfg.workers + 1:
                submit(clip_pool, clip_stages, clips.popleft(), is_video_job=False)
            while busy(video_jobs=True) < video_workers + 1 and len(outstanding) < cfg.max_in_flight:
                source = feed.peek()
                if source is None or (outstanding and (source in alone or not alone.isdisjoint(outstanding))):
                    break
                feed.take()
                if started is not None:
                    started(source)
                submit(video_pool, video_stages, VideoTask(source=source), is_video_job=True)
            if not running:  # queued clips always have a job running, so there is nothing left
                if feed.wait():
                    continue
                break
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in done:
                source, is_video_job = running.pop(future)
                outstanding[source] -= 1
                ended = []
                for task in future.result():
                    if is_video_job and isinstance(task, ClipTask) and task.ok:
                        clips.append(task)  # on to the clip pool
                    else:
                        ended.append(task)
                deliver(ended, writer, progress)
                if outstanding[source] <= 0 and not any(c.source == source for c in clips):
                    del outstanding[source]
                    if finished is not None:
                        finished(source)
