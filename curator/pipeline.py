"""The curation pipeline as data: the ordered processing stages every executor runs."""
from __future__ import annotations

from collections.abc import Iterator

from curator.config import CurateConfig
from curator.stages.base import Resources, Stage
from curator.stages.clip_length import ClipLengthStage
from curator.stages.crop import CropStage
from curator.stages.decode import DecodeStage
from curator.stages.encode import EncodeStage
from curator.stages.probe import ProbeStage
from curator.stages.resize import ResizeStage
from curator.stages.shots import ShotDetectionStage
from curator.tasks import Task


def processing_stages(cfg: CurateConfig) -> list[Stage]:
    """Probe -> decode -> shots -> clip length (fans out to clips) -> crop -> resize -> encode."""
    return [ProbeStage(cfg), DecodeStage(cfg), ShotDetectionStage(cfg), ClipLengthStage(cfg),
            CropStage(cfg), ResizeStage(cfg), EncodeStage(cfg)]


def run_depth_first(stages: list[Stage], task: Task) -> Iterator[Task]:
    """Push one task through `stages`, finishing each clip before the next one is produced, so at
    most one clip's frames are alive per call; rejected tasks come out as soon as they are."""
    if not stages or not task.ok:
        yield task
        return
    for out in stages[0](task):
        yield from run_depth_first(stages[1:], out)


def fan_out_index(stages: list[Stage]) -> int:
    """Position of the stage that turns a video into clips; later stages work on single clips."""
    return next(i for i, stage in enumerate(stages) if isinstance(stage, ClipLengthStage))


def job_stages(stages: list[Stage]) -> tuple[list[Stage], list[Stage]]:
    """The executors' units of work: a video's stages up to the clip fan-out, and each clip's stages
    after it. Within a job a task's frames pass from stage to stage in memory; between jobs only
    clips travel, each with its own frames."""
    split = fan_out_index(stages) + 1
    return stages[:split], stages[split:]


def actor_jobs(stages: list[Stage], scope: str) -> list[list[Stage]]:
    """What each actor of a cluster executor runs, by `curate.ray_actor_scope`: a job's stages
    ("job"), or one stage ("stage")."""
    return [job for job in job_stages(stages) if job] if scope == "job" else [[stage] for stage in stages]


def job_resources(stages: list[Stage]) -> Resources:
    """What one worker running these stages in turn needs: the most any of them asks for."""
    needs = [stage.resources for stage in stages]
    return Resources(cpus=max(r.cpus for r in needs), gpus=max(r.gpus for r in needs),
                     nvdec=any(r.nvdec for r in needs))
