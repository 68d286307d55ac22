"""NeMo Curator adapter: curation stages as `nemo_curator` ProcessingStages (any one stage, or, as
`curate` runs them, each job's stages together), run by its executors (RayActorPoolExecutor,
XennaExecutor, RayDataExecutor) at cluster scale.

Our tasks ride inside a NeMo Curator Task as its `data`; the adapter passes each through the
wrapped stage unchanged in meaning (rejected tasks flow on untouched, fan-outs stay fan-outs).
Inputs go through the pipeline in batches of `max_in_flight` so the driver, which owns the
writer and ledger, receives finished clips while the run continues and memory stays bounded.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from nemo_curator.backends.base import BaseExecutor
from nemo_curator.pipeline import Pipeline
from nemo_curator.stages.base import ProcessingStage
from nemo_curator.stages.resources import Resources as NemoResources
from nemo_curator.tasks import Task as NemoTask

from curator.config import CurateConfig
from curator.executors.thread_limits import available_cores
from curator.pipeline import actor_jobs, frames_to_host, job_resources, run_depth_first
from curator.progress import RunProgress
from curator.stages.base import Stage, WorkerContext
from curator.stages.shard_writer import ShardWriterStage
from curator.tasks import Task, VideoTask

log = logging.getLogger(__name__)


@dataclass
class CurationTask(NemoTask[Any]):
    """A curator VideoTask or ClipTask carried through NeMo Curator."""

    @property
    def num_items(self) -> int:
        return 1

    def validate(self) -> bool:
        return isinstance(self.data, Task)


class CuratorStage(ProcessingStage[CurationTask, CurationTask]):
    """Curator stages behind NeMo Curator's stage interface: one stage, or a job's stages run one
    after the other in the same worker (so a video's frames do not cross NeMo's object store
    between them)."""

    def __init__(self, *stages: Stage, cpus: float, ctx: WorkerContext):
        self.stages = list(stages)
        self.ctx = ctx
        self.name = "+".join(stage.name for stage in stages)
        self.resources = NemoResources(cpus=cpus, gpus=job_resources(self.stages).gpus)

    def inputs(self) -> tuple[list[str], list[str]]:
        return ["data"], []

    def outputs(self) -> tuple[list[str], list[str]]:
        return ["data"], []

    def setup(self, worker_metadata: Any = None) -> None:
        for stage in self.stages:
            stage.setup(self.ctx)

    def process(self, task: CurationTask) -> list[CurationTask]:
        return [CurationTask(dataset_name=task.dataset_name, data=frames_to_host(out, self.ctx.device))
                for out in run_depth_first(self.stages, task.data)]


def make_executor(backend: str) -> BaseExecutor:
    if backend == "xenna":
        from nemo_curator.backends.xenna import XennaExecutor

        return XennaExecutor()
    if backend == "ray_data":
        from nemo_curator.backends.ray_data import RayDataExecutor

        return RayDataExecutor()
    from nemo_curator.backends.ray_actor_pool import RayActorPoolExecutor

    return RayActorPoolExecutor(show_progress=False)


def worker_context(cfg: CurateConfig, gpus: float) -> WorkerContext:
    """NeMo Curator's workers: single-threaded processes, `workers` of them sharing the cores, on a
    GPU where the stages they run declare one."""
    return WorkerContext(max(1, available_cores() // cfg.workers), 1, "cuda" if gpus > 0 else "cpu")


def nemo_pipeline(cfg: CurateConfig, stages: list[Stage]) -> Pipeline:
    """Our stages as a NeMo Curator Pipeline, grouped as the Ray runner groups them
    (`curate.ray_actor_scope`: by default a video's stages up to the clip fan-out, then a clip's);
    each gets an equal share of `workers` CPUs (capped at its declared need), which keeps Xenna's
    per-stage CPU check satisfied on small hosts."""
    jobs = actor_jobs(stages, cfg.ray_actor_scope)
    share = cfg.workers / len(jobs)
    needs = [job_resources(job) for job in jobs]
    wrapped = [CuratorStage(*job, cpus=min(need.cpus, share), ctx=worker_context(cfg, need.gpus))
               for job, need in zip(jobs, needs, strict=True)]
    return Pipeline(name="megatron-video-curate", stages=wrapped)


def run_nemo(cfg: CurateConfig, sources: list[str], stages: list[Stage], writer: ShardWriterStage,
             progress: RunProgress) -> None:
    pipeline = nemo_pipeline(cfg, stages)
    executor = make_executor(cfg.nemo_backend)
    for lo in range(0, len(sources), cfg.max_in_flight):
        batch = [CurationTask(dataset_name="curate", data=VideoTask(source=s))
                 for s in sources[lo:lo + cfg.max_in_flight]]
        for result in pipeline.run(executor=executor, initial_tasks=batch) or []:
            writer.process(result.data)
        progress.update(writer.inputs_finished, writer.clips_written)
