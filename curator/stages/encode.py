"""Encode stage: H.264 MP4 in memory, NVENC on GPUs that have it, libx264 (through PyAV) elsewhere."""
from __future__ import annotations

import logging
from dataclasses import dataclass

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

    @property
    def resources(self) -> Resources:
        # On the GPU path the frames arrive on the GPU and are converted to I420 there even when
        # libx264 encodes them, so the stage needs the device either way.
        return Resources(cpus=1.0, gpus=0.1 if use_gpu(self.cfg.device) else 0.0)

    def inputs(self) -> list[str]:
        return ["frames"]

    def outputs(self) -> list[str]:
        return ["mp4"]

    def threads(self, ctx: WorkerContext) -> int:
        """x264 threads per clip: by default the worker's cores shared among the clips it encodes at
        once, since every encoder asking for all cores oversubscribes the machine that many times."""
        return self.cfg.encode_threads or ctx.threads_per_task

    def processes(self, ctx: WorkerContext) -> int:
        """Encoder processes: by default one per clip the worker encodes at once where several threads
        share one process's GIL (a single-threaded worker, as NeMo Curator's, needs none; NVENC neither)."""
        if use_nvenc(self.cfg.device):
            return 0
        if self.cfg.encode_processes >= 0:
            return self.cfg.encode_processes
        return ctx.concurrent_tasks if ctx.concurrent_tasks > 1 else 0

    def setup(self, ctx: WorkerContext) -> None:
        self.x264_threads = self.threads(ctx)
        processes = self.processes(ctx)
        if processes and not can_start_processes():
            log.warning("curate encode-in-threads reason=the main module's file does not exist (a script "
                        "read from stdin?): encoder processes cannot start; run a script file for the pool")
            processes = 0
        self.pool = EncodePool(processes, self.cfg.encoder_priority) if processes else None

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()

    def process(self, task: ClipTask) -> list[Task]:
        cfg = self.cfg
        if use_nvenc(cfg.device):
            with span("encoder_call"):
                task.mp4 = nvcodec.encode_h264(task.frames, cfg.fps)
        else:
            # Converted where the frames are: on the GPU, I420 is half the bytes of RGB to copy to
            # the host, and the conversion costs the CPU nothing. The pool copies it straight into
            # the encoder's shared memory.
            planes = rgb_to_i420(task.frames)
            if self.pool is not None:  # its encoder call is timed after the copy into shared memory
                task.mp4, cpu = self.pool.encode(planes, cfg.fps, cfg.crf, cfg.preset, self.x264_threads)
                task.metrics.encoder_process_cpu += cpu
            else:
                planes = to_host(planes)
                with span("encoder_call"):
                    task.mp4 = pyav_io.encode_i420(planes, cfg.fps, cfg.crf, cfg.preset, self.x264_threads)
        # The raw frames are the heaviest thing a task carries; drop them before the writer queue.
        task.frames = None
        return [task]
