"""Encode stage: H.264 MP4 in memory, NVENC on GPUs that have it, libx264 (through PyAV) elsewhere."""
from __future__ import annotations

import logging
from dataclasses import dataclass

from curator.config import CurateConfig
from curator.stages.base import Resources, Stage, WorkerContext
from curator.tasks import ClipTask, Task
from curator.tracing import span
from curator.video import nvcodec, pyav_io
from curator.video.backend import use_gpu, use_nvenc
from curator.video.encode_pool import EncodePool, can_start_processes
from curator.video.frames import rgb_to_i420, to_host

log = logging.getLogger(__name__)


@dataclass
class EncodeStage(Stage):
    name = "encode"
    fps: float = 24.0
    crf: int = 23
    preset: str = "veryfast"
    # 0: the worker's cores shared among the clips it encodes at once.
    threads: int = 0
    # -1: one encoder process per clip the worker encodes at once on threads sharing a GIL.
    processes: int = -1
    encoder_priority: str = "idle"

    def __post_init__(self) -> None:
        # On the GPU path the frames arrive on the GPU and are converted to I420 there even when
        # libx264 encodes them, so the stage needs the device either way.
        self.resources = Resources(cpus=1.0, gpus=0.1 if use_gpu(self.device) else 0.0)

    @classmethod
    def from_config(cls, cfg: CurateConfig) -> EncodeStage:
        return cls(device=cfg.device, fps=cfg.fps, crf=cfg.crf, preset=cfg.preset, threads=cfg.encode_threads,
                   processes=cfg.encode_processes, encoder_priority=cfg.encoder_priority)

    def inputs(self) -> list[str]:
        return ["frames"]

    def outputs(self) -> list[str]:
        return ["mp4"]

    def x264_threads_for(self, ctx: WorkerContext) -> int:
        """x264 threads per clip: by default the worker's cores shared among the clips it encodes at
        once, since every encoder asking for all cores oversubscribes the machine that many times."""
        return self.threads or ctx.threads_per_task

    def processes_for(self, ctx: WorkerContext) -> int:
        """Encoder processes: by default one per clip the worker encodes at once where several threads
        share one process's GIL (a single-threaded worker, as NeMo Curator's, needs none; NVENC neither)."""
        if use_nvenc(self.device):
            return 0
        if self.processes >= 0:
            return self.processes
        return ctx.concurrent_tasks if ctx.concurrent_tasks > 1 else 0

    def setup(self, ctx: WorkerContext) -> None:
        self.x264_threads = self.x264_threads_for(ctx)
        processes = self.processes_for(ctx)
        if processes and not can_start_processes():
            log.warning("curate encode-in-threads reason=the main module's file does not exist (a script "
                        "read from stdin?): encoder processes cannot start; run a script file for the pool")
            processes = 0
        self.pool = EncodePool(processes, self.encoder_priority) if processes else None

    def teardown(self) -> None:
        if self.pool is not None:
            self.pool.close()

    def process(self, task: ClipTask) -> list[Task]:
        if use_nvenc(self.device):
            with span("encoder_call"):
                task.mp4 = nvcodec.encode_h264(task.frames, self.fps)
        else:
            # Converted where the frames are: on the GPU, I420 is half the bytes of RGB to copy to
            # the host, and the conversion costs the CPU nothing. The pool copies it straight into
            # the encoder's shared memory.
            planes = rgb_to_i420(task.frames)
            if self.pool is not None:  # its encoder call is timed after the copy into shared memory
                task.mp4, cpu = self.pool.encode(planes, self.fps, self.crf, self.preset, self.x264_threads)
                task.metrics.encoder_process_cpu += cpu
            else:
                planes = to_host(planes)
                with span("encoder_call"):
                    task.mp4 = pyav_io.encode_i420(planes, self.fps, self.crf, self.preset, self.x264_threads)
        # The raw frames are the heaviest thing a task carries; drop them before the writer queue.
        task.frames = None
        return [task]
