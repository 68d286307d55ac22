"""The curation pipeline as data: the ordered processing stages every executor runs, and how the
executors cut them into jobs.

A new stage is one file under curator/stages/ and one line in PIPELINE (docs/curation_stages.md).
"""
from __future__ import annotations

from collections.abc import Iterator

from curator.config import CurateConfig
from curator.stages.base import Resources, Stage
from curator.stages.clip_length import ClipLengthStage
from curator.stages.crop import CropStage
from curator.stages.decode import DecodeStage
from curator.stages.encode import EncodeStage
from curator.stages.filter_aesthetic import AestheticFilterStage
from curator.stages.filter_colour import ColourFilterStage
from curator.stages.filter_duplicates import DuplicateHashStage
from curator.stages.filter_faces import FaceFilterStage
from curator.stages.filter_motion import MotionFilterStage
from curator.stages.filter_stillness import StillnessFilterStage
from curator.stages.filter_text import TextFilterStage
from curator.stages.probe import ProbeStage
from curator.stages.resize import ResizeStage
from curator.stages.shots import ShotDetectionStage
from curator.tasks import Task

# In the order a task goes through them. The clip-length stage fans a video out into clips: the
# stages before it work on a whole video, those after it on one clip each.
PIPELINE: list[type[Stage]] = [
    ProbeStage,
    DecodeStage,
    ShotDetectionStage,
    ClipLengthStage,
    CropStage,
    TextFilterStage,
    ResizeStage,
    # The filters score every clip; none rejects one: the thresholds are applied to the stored
    # scores after the run (curator/filters/verdict.py), so changing one never decodes again.
    ColourFilterStage,
    StillnessFilterStage,
    DuplicateHashStage,
    MotionFilterStage,
    FaceFilterStage,
    AestheticFilterStage,
    EncodeStage,
]


def build_stages(cfg: CurateConfig) -> list[Stage]:
    """Each stage of PIPELINE as `cfg` configures it, built once for the run; a stage `cfg` turns off
    (its `from_config` returns None) is left out."""
    built = (stage_class.from_config(cfg) for stage_class in PIPELINE)
    return [stage for stage in built if stage is not None]


def run_depth_first(stages: list[Stage], task: Task) -> Iterator[Task]:
    """Push one task through `stages`, finishing each clip before the next one is produced, so at
    most one clip's frames are alive per call; rejected tasks come out as soon as they are."""
    if not stages or not task.ok:
        yield task
        return
    for out in stages[0](task):
        yield from run_depth_first(stages[1:], out)


def job_stages(stages: list[Stage]) -> tuple[list[Stage], list[Stage]]:
    """The executors' units of work: a video's stages up to the clip fan-out, and each clip's stages
    after it. Within a job a task's frames pass from stage to stage in memory; between jobs only
    clips travel, each with its own frames."""
    split = next(i for i, stage in enumerate(stages) if isinstance(stage, ClipLengthStage)) + 1
    return stages[:split], stages[split:]


def job_resources(stages: list[Stage]) -> Resources:
    """What one worker running these stages in turn needs: the most any of them asks for."""
    needs = [stage.resources for stage in stages]
    return Resources(cpus=max(r.cpus for r in needs), gpus=max(r.gpus for r in needs),
                     nvdec=any(r.nvdec for r in needs))
