"""The Ray runner's "pipeline" scope (`curate.ray_actor_scope=pipeline`): one actor per GPU of the
cluster (one per node without GPUs), each running the local executor's threads (video and clip
pools, encoder processes) on the batches of inputs the driver hands it. Frames never leave the
actor that decoded them; only finished clips (MP4 bytes and metadata) come back, to the driver's
writer, which keeps the one ledger and commits shards. It is the local executor, measured 3x as
fast as job actors on one H200 (BENCHMARKS.md), spread over a cluster with the load balanced
batch by batch; it has not been timed on several GPUs yet.
"""
from __future__ import annotations

import dataclasses
import logging
from collections import deque
from typing import Any

from curator.config import CurateConfig
from curator.executors.local import run_jobs
from curator.executors.ray_runner import ActorBody, log_actor_nodes
from curator.progress import RunProgress
from curator.stages.base import Stage
from curator.stages.shard_writer import ShardWriterStage
from curator.tasks import Task

log = logging.getLogger(__name__)
# Batches queued per actor: one running and one waiting, so an actor starts its next batch while
# the driver collects the last one.
BATCHES_PER_ACTOR = 2


class _Collected:
    """What a pipeline actor's local executor writes to: the finished tasks, without frames."""

    def __init__(self) -> None:
        self.tasks: list[Task] = []
        self.inputs_finished = self.clips_written = 0

    def process(self, task: Task) -> None:
        task.drop_frames()
        self.tasks.append(task)


class _Silent:
    """The actor's progress: the driver reports the run's."""

    def update(self, inputs: int, clips: int) -> None:
        pass


class _PipelineWorker(ActorBody):
    """Ray actor body: the whole pipeline on this actor's GPU and cores, set up once."""

    def __init__(self, cfg: CurateConfig, stages: list[Stage]):
        # The local executor sizes its pools, encoder processes and library threads from `workers`.
        self.cfg = cfg
        self.stages = [dataclasses.replace(stage, cfg=cfg) for stage in stages]
        for stage in self.stages:
            stage.setup()

    def run(self, sources: list[str]) -> list[Task]:
        collected = _Collected()
        run_jobs(self.cfg, sources, self.stages, collected, _Silent())
        return collected.tasks


def pipeline_slots(nodes: list[dict[str, float]]) -> tuple[int, float, float]:
    """(actors, CPUs each, GPUs each): one actor per GPU, each with its GPU's share of the cores of
    the poorest node, so that every actor fits wherever its GPU is; one per node without GPUs."""
    gpus = [int(node.get("GPU", 0)) for node in nodes]
    actors = gpus if any(gpus) else [1] * len(nodes)  # on each node
    share = min(node.get("CPU", 0.0) / count for node, count in zip(nodes, actors, strict=True) if count)
    return sum(actors), max(1.0, float(int(share))), 1.0 if any(gpus) else 0.0


def run_pipelines(cfg: CurateConfig, sources: list[str], stages: list[Stage], writer: ShardWriterStage,
                  progress: RunProgress, nodes: list[dict[str, float]]) -> None:
    import ray

    count, cpus, gpus = pipeline_slots(nodes)
    actor_cfg = dataclasses.replace(cfg, executor="local", workers=int(cpus))
    actor_class = ray.remote(_PipelineWorker)
    actors = [actor_class.options(num_cpus=cpus, num_gpus=gpus, scheduling_strategy="SPREAD")
              .remote(actor_cfg, stages) for _ in range(count)]
    # Batches small enough that the last ones spread over every actor, as large as max_in_flight allows.
    batch = max(1, min(cfg.max_in_flight // count, -(-len(sources) // (count * BATCHES_PER_ACTOR))))
    pending = deque(sources)
    running: dict[Any, int] = {}
    load = [0] * count
    log.info("curate ray-pipelines actors=%d cpus=%.0f gpus=%.0f batch=%d", count, cpus, gpus, batch)
    try:
        while pending or running:
            for index, actor in enumerate(actors):
                while pending and load[index] < BATCHES_PER_ACTOR:
                    chunk = [pending.popleft() for _ in range(min(batch, len(pending)))]
                    running[actor.run.remote(chunk)] = index
                    load[index] += 1
            ready, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
            for ref in ready:
                load[running.pop(ref)] -= 1
                for task in ray.get(ref):
                    writer.process(task)
            progress.update(writer.inputs_finished, writer.clips_written)
        log_actor_nodes(actors)
    finally:
        for actor in actors:
            ray.kill(actor)
