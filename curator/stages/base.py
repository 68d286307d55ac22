"""The stage contract shared by the in-process executor, the Ray runners and the NeMo Curator adapter,
shaped as NeMo Curator's `ProcessingStage`.

A stage is a small dataclass configured by its own fields, built once from the curation config by
its `from_config` classmethod (`curator/pipeline.py` lists the stages in order; docs/curation_stages.md
says how to add one). It declares `resources` (what one worker needs) and the task fields it reads
(`inputs`) and writes (`outputs`), loads heavy models in `setup(ctx)` and releases them in
`teardown()`, and does its work in `process()`, which returns zero or more tasks (a video fans out
into clips). The executor describes the worker in `setup`'s WorkerContext, so no stage asks which
executor runs it, reads the run's config, or imports from `curator/executors/`.
`__call__` adds what every stage needs the same way:
rejected tasks pass through untouched, the stage's wall seconds and its thread's CPU seconds go
into `task.metrics` under the stage's name (with a timeline recording, each call is also a span
named after the stage), a stage that declares a GPU runs on its worker thread's own CUDA stream
(so no stage can queue on the legacy default stream, which stalls every decoder of the process),
and an exception marks the task failed with the stage named in the reason instead of stopping the
run (except a `RunFault`, the environment's, which stops it).
"""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass

from curator.config import CurateConfig
from curator.errors import RunFault
from curator.tasks import FAILED, Task
from curator.tracing import span
from curator.video.backend import use_gpu, worker_stream

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resources:
    cpus: float = 1.0
    gpus: float = 0.0
    # Each task in flight holds an NVDEC session: executors keep the sessions per GPU within
    # `curate.nvdec_sessions`, past which decodes only slow each other down.
    nvdec: bool = False


def frame_reader_resources(cpus: float, device: str) -> Resources:
    """What a stage reading a clip's frames declares. On the GPU path those frames are CUDA tensors,
    downscaled there before they leave the device: a share of the GPU, which also puts the stage's
    calls on the worker thread's own CUDA stream (`Stage._stream`)."""
    return Resources(cpus=cpus, gpus=0.1 if use_gpu(device) else 0.0)


@dataclass(frozen=True)
class WorkerContext:
    """The worker a stage is set up in, as its executor made it."""

    # Cores this worker's calls of the stage share (its process's, or its share of them).
    cores: int
    # Calls of the stage the worker runs at once: threads of one process, so sharing its GIL.
    concurrent_tasks: int
    # The torch device the worker's stages run on: "cuda" where the executor gave it a GPU
    # (the current device of its process or thread), else "cpu".
    device: str = "cpu"

    @property
    def threads_per_task(self) -> int:
        """Library threads each call may start without oversubscribing the worker's cores."""
        return max(1, self.cores // self.concurrent_tasks)


@dataclass(kw_only=True)
class Stage:
    """Subclasses are dataclasses whose fields are their settings (best each with a default, so a
    stage builds with no arguments in tests; `device` is keyword-only, so one without a default may
    follow it), and which set:

    - `name` (class attribute): the stage's name in metrics, spans and failure reasons;
    - `resources`: a class attribute, or set in `__post_init__` when it depends on a field;
    - `from_config(cfg)`: the stage as `cfg` configures it, or None where `cfg` turns it off.
    """

    name = "stage"
    resources = Resources(cpus=1.0)
    # The config's `device` ("auto", "cpu", "cuda"): stages declaring a GPU run their calls on the
    # worker thread's own CUDA stream when it resolves to the GPU path.
    device: str = "cpu"

    @classmethod
    def from_config(cls, cfg: CurateConfig) -> Stage | None:
        raise NotImplementedError(f"{cls.__name__} does not say how the curation config builds it")

    def inputs(self) -> list[str]:
        return []

    def outputs(self) -> list[str]:
        return []

    def setup(self, ctx: WorkerContext) -> None:
        """Load models or open devices; called once per worker before the first task."""

    def teardown(self) -> None:
        """Release what `setup` started (processes, devices); called once per worker when the run ends."""

    def process(self, task: Task) -> list[Task]:
        raise NotImplementedError

    def _stream(self) -> contextlib.AbstractContextManager:
        # The thread's own stream, never the legacy default one, which slows every NVDEC decoder of
        # the process (benchmarks/notes.md, "CUDA streams"). Only stages that declare a GPU: the
        # others need no CUDA context on their threads.
        return worker_stream(self.device) if self.resources.gpus > 0 else contextlib.nullcontext()
    def __call__(self, task: Task) -> list[Task]:
        if not task.ok:
            return [task]
        start, cpu_start = time.perf_counter(), time.thread_time()
        try:
            with span(self.name), self._stream():
                out = self.process(task)
        except RunFault:
            raise  # the run's fault, not this input's: stop, leaving the input unfinished
        except Exception as exc:  # noqa: BLE001 - a bad input must never stop the run: record it, go on
            log.warning("curate stage-failed stage=%s source=%s error=%r", self.name, task.source, exc)
            task.reject(FAILED, f"{self.name}: {type(exc).__name__}: {exc}")
            out = [task]
        wall, cpu = time.perf_counter() - start, time.thread_time() - cpu_start
        # A fan-out shares the stage's time among its outputs so per-input sums stay exact.
        for item in out:
            item.metrics.add_stage(self.name, wall / max(len(out), 1), cpu / max(len(out), 1))
        return out
