"""The project's Ray runner: a pool of actors per job, fed by one driver loop.

- Jobs: the actors run the pipeline's stages in the local executor's two jobs
  (`pipeline.job_stages`): a video's stages up to the clip fan-out (probe, decode, shots, clip
  length) in one actor, and each clip's stages (crop, resize, encode) in another. A video's frames
  stay in the actor that decoded them; only clips, each with its own frames, cross to another
  actor. With an actor pool per stage (`curate.ray_actor_scope=stage`, for scaling one stage on
  its own), every video's frames (~250 MB a 15 s 720p video at the kept size) go through the
  object store at every stage boundary: on one H200, 48 720p videos took 83 s that way, 24.8 s in
  job actors, and 5.4-6.4 s with the local executor. Frames leave an actor as host arrays, copied
  on its worker's stream (`pipeline.frames_to_host`), so the next actor's clip stages run on its
  CPUs: as pickled CUDA tensors they were copied on the legacy default stream at both ends (one
  H200, 48 videos: 17.2 and 18.8 s against 20.0-22.4 s).
- Overlap: each actor runs `actor_threads` tasks at once (a threaded actor), so one worker's
  file reads and decodes overlap its CPU or GPU work.
- Distribution: actors are placed with the SPREAD strategy across the cluster's nodes, and the
  driver hands each task to the least-loaded actor of its job. Between jobs a clip stays in the
  object store: the driver routes references, and only finished or rejected tasks (without
  their frames) reach it by value, for the writer.
- Balance: all `workers` actors start at once, shared evenly among the jobs, so their start-up
  overlaps the first tasks; once `calibration_tasks` tasks have left the last job (or been
  rejected), the measured seconds of each job's stages re-share the budget (`balance_workers`):
  actors are added where it grew and retired where it shrank (a retiring actor finishes the tasks
  it holds first). A job that holds NVDEC sessions gets no more actors than keep them within
  `nvdec_sessions` per GPU (`nvdec_caps`); the rest of the budget goes to the other job. Starting
  with one actor per job and growing after calibration left one video actor to curate the
  first videos alone while the others started: on one H200, the first 10 s of a 30 s run.
- Backpressure: at most `max_in_flight` inputs are open at once, and an actor never holds more than
  `actor_threads` tasks, so memory stays bounded however large the input is.
The writer stays in the driver: it owns the ledger, and commits must be serial.
When the run ends, or fails, the runner has its actors close their stages (encoder processes
included) and then kills them, so no process (or CUDA context) lingers into what the driver runs
next (`stop_actors`).

Several nodes: start Ray on each node and point the driver at the head through RAY_ADDRESS; with
it set (or with Ray already initialised in the process) the runner joins that cluster instead of
starting a local one. For example, inside one SLURM allocation:

    ray start --head --port=6379                  # on the first node, $HEAD
    ray start --address=$HEAD:6379 --block        # on every other node, e.g. one srun task each
    RAY_ADDRESS=$HEAD:6379 mvideo curate input=/lustre/raw output=/lustre/curated curate=gpu_node

slurm/curate.sbatch scripts these steps, and stops Ray on every node at the end. Inputs must be
readable from every node (a shared file system or a bucket), because any node's actors may decode
any input; the output only needs to be local to the driver, which writes all shards. At the end
of a run the runner logs `curate ray-nodes actors_per_node={node_id: n}`, which shows whether the
actors really spread over the nodes.
"""
from __future__ import annotations

import logging
import os
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

import cv2

from curator.config import CurateConfig
from curator.executors.ray_actors import ActorBody, log_actor_nodes, stop_actors
from curator.executors.ray_pipelines import run_pipelines
from curator.executors.thread_limits import available_cores
from curator.pipeline import actor_jobs, frames_to_host, job_resources, run_depth_first
from curator.progress import RunProgress
from curator.stages.base import Stage, WorkerContext
from curator.stages.shard_writer import ShardWriterStage
from curator.tasks import Task, VideoTask

log = logging.getLogger(__name__)


def balance_workers(stage_seconds: list[float], budget: int, caps: list[int | None] | None = None) -> list[int]:
    """Workers per job (or stage) proportional to the time each takes, at least one each and at most
    its cap (None: no cap), summing to max(budget, number of jobs) unless the caps allow fewer:
    what a capped job cannot take goes to the others."""
    count = len(stage_seconds)
    budget = max(budget, count)
    limits = [budget if cap is None else max(1, cap) for cap in caps or [None] * count]
    budget = min(budget, sum(limits))
    total = sum(stage_seconds)
    if total <= 0:
        return [1] * count
    ideal = [budget * s / total for s in stage_seconds]
    workers = [min(limit, max(1, int(x))) for x, limit in zip(ideal, limits, strict=True)]
    while sum(workers) < budget:  # hand out the rest where the shortfall is largest
        workers[max((i for i in range(count) if workers[i] < limits[i]), key=lambda i: ideal[i] - workers[i])] += 1
    while sum(workers) > budget:  # minimums overshot: take from the best-served stage
        workers[max((i for i in range(count) if workers[i] > 1), key=lambda i: workers[i] - ideal[i])] -= 1
    return workers


def nvdec_caps(jobs: list[list[Stage]], cfg: CurateConfig, gpus: float) -> list[int | None]:
    """Most actors for each job: a job holding NVDEC sessions gets as many as keep its sessions
    (`actor_threads` per actor) within `nvdec_sessions` per GPU of the cluster; other jobs None.
    Every actor is a process with a CUDA context of its own, and more sessions than the GPU's
    decode engines keep busy only slow each other down."""
    sessions = cfg.nvdec_sessions * max(1, round(gpus))
    return [max(1, sessions // cfg.actor_threads) if job_resources(job).nvdec else None for job in jobs]


class _JobWorker(ActorBody):
    """Ray actor body: one job's stages, set up once, called from several threads."""

    def __init__(self, stages: list[Stage], library_threads: int, ctx: WorkerContext):
        # An actor's share of the node's cores bounds its libraries' pools, as the local executor
        # bounds its threads' (thread_limits.py, where uncapped pools burned 15 CPU-seconds of a 9 s
        # run). Ray sets OMP_NUM_THREADS from num_cpus, which covers OpenMP, BLAS and torch; OpenCV
        # would still start a thread per core for each call, in every actor on the node.
        cv2.setNumThreads(library_threads)
        self.stages, self.device = stages, ctx.device
        for stage in stages:
            stage.setup(ctx)

    def run(self, task: Task, forward: bool) -> list[Any]:
        """The job's outputs. Those going on to another job (`forward`, not rejected) stay in the
        object store and come back as references, so their frames (host arrays by then) travel from
        this actor to the next without passing through the driver; the rest come back by value for
        the writer, without frames. Routing whole tasks through the driver made it deserialise and re-serialise every
        video's frames (CUDA tensors on the GPU path) at each stage: on one H200, 48 720p videos
        took 237 s with the driver busy on one core throughout, against 5.4 s in one process."""
        import ray

        outputs = []
        for out in run_depth_first(self.stages, task):
            if forward and out.ok:
                outputs.append(ray.put(frames_to_host(out, self.device)))
            else:
                out.drop_frames()
                outputs.append(out)
        return outputs


@dataclass(eq=False)
class _Actor:
    handle: Any
    load: int = 0  # tasks it holds
    retiring: bool = False  # gets no new tasks; killed once it holds none


class _Pool:
    """One job's actors. Resizing adds actors, or retires the least-loaded ones: a retiring actor
    finishes what it holds and is then killed, so no task is lost or run twice."""

    def __init__(self, stages: list[Stage], actor_class: Any, cpus: float, gpus: float, ctx: WorkerContext):
        self.stages, self.actor_class, self.cpus, self.gpus, self.ctx = stages, actor_class, cpus, gpus, ctx
        self.threads = ctx.concurrent_tasks
        self.name = "+".join(stage.name for stage in stages)
        self.actors: list[_Actor] = []

    def resize(self, count: int) -> None:
        active = sorted((a for a in self.actors if not a.retiring), key=lambda a: a.load)
        for actor in active[:max(0, len(active) - count)]:
            actor.retiring = True
            self.release(actor)
        for _ in range(count - len(active)):
            self.actors.append(_Actor(self.actor_class.options(
                num_cpus=self.cpus, num_gpus=self.gpus, max_concurrency=self.threads,
                scheduling_strategy="SPREAD").remote(self.stages, max(1, int(self.cpus)), self.ctx)))

    def free_actor(self) -> _Actor | None:
        """The least-loaded actor taking tasks that has a free thread, or None."""
        active = [a for a in self.actors if not a.retiring]
        best = min(active, key=lambda a: a.load, default=None)
        return best if best is not None and best.load < self.threads else None

    def close(self) -> None:
        """Stop every actor, busy or not (the run is over, or failed)."""
        stop_actors([actor.handle for actor in self.actors])
        self.actors.clear()

    def release(self, actor: _Actor) -> None:
        """Called when `actor` has finished a task (or is retired): a retiring one that holds no more
        tasks is stopped."""
        if actor.retiring and actor.load == 0:
            stop_actors([actor.handle])
            self.actors.remove(actor)


# Ray accounts resources in fixed point: a ten-thousandth of a CPU or GPU is the smallest share.
_UNITS = 10_000


def _fitting_share(bins: list[float], count: int) -> float:
    """The largest share, at most one, at which `count` actors fit in bins of these sizes. Dividing
    the total by the count is not enough: an actor cannot straddle bins."""
    units = [round(size * _UNITS) for size in bins if size > 0]
    # The number of actors that fit only drops as the share passes some units[i] // k, so the best
    # share is one of those (or the cap of one).
    shares = {min(size // k, _UNITS) for size in units for k in range(1, count + 1) if size // k}
    return max(s for s in shares if sum(size // s for size in units) >= count) / _UNITS


def actor_cpus(node_cpus: list[float], budget: int) -> float:
    """The largest CPU share, at most one CPU, at which `budget` actors fit on nodes with these CPU
    counts: e.g. 7 actors of 3/7 CPU fit 2 on a 1-CPU node and 4 on a 2-CPU node, and the seventh
    would wait forever."""
    if not any(cpus > 0 for cpus in node_cpus):
        raise RuntimeError("the Ray cluster has no CPUs to place job actors on")
    return _fitting_share(node_cpus, budget)


def actor_gpus(node_gpus: list[float], actors: int, wanted: float) -> float:
    """The GPU share each of `actors` actors gets: `wanted`, or less where that many would not fit.
    Ray packs fractional shares within one device, so every GPU is a bin of its own: 3 actors of
    2/3 GPU fit on no 2-GPU node, 3 of 1/2 do. An actor that cannot be placed waits forever, and so
    would the tasks handed to it (16 actors of 0.1 GPU on one H200 hung the run)."""
    if wanted <= 0:
        return 0.0
    devices = [1.0] * sum(int(gpus) for gpus in node_gpus)
    if not devices:
        raise RuntimeError("the pipeline's stages need a GPU and the Ray cluster has none "
                           "(curate.device=cpu runs them on CPUs)")
    return min(wanted, _fitting_share(devices, actors))


def actor_context(cfg: CurateConfig, gpus: float) -> WorkerContext:
    """The worker each job actor is: `actor_threads` tasks at once, on its share of the cores, as
    the `workers` actors share them, on the GPU Ray gave it (`gpus` > 0) or the CPU."""
    return WorkerContext(max(1, available_cores() // cfg.workers), cfg.actor_threads, "cuda" if gpus > 0 else "cpu")


def _start_ray(cfg: CurateConfig) -> None:
    import ray

    if not ray.is_initialized():
        # RAY_ADDRESS joins an existing cluster (e.g. started on SLURM); otherwise one starts here.
        # "local" rather than no address: without one, ray.init joins whatever cluster the node last
        # recorded in /tmp/ray/ray_current_cluster, and hangs when that cluster has since died.
        address = os.environ.get("RAY_ADDRESS")
        ray.init(address=address or "local", include_dashboard=False, log_to_driver=False,
                 num_cpus=None if address else max(cfg.workers, os.cpu_count() or 1))


def run_ray(cfg: CurateConfig, sources: list[str], stages: list[Stage], writer: ShardWriterStage,
            progress: RunProgress) -> None:
    import ray

    _start_ray(cfg)
    nodes = [node["Resources"] for node in ray.nodes() if node["Alive"]]
    if cfg.ray_actor_scope == "pipeline":
        run_pipelines(cfg, sources, stages, writer, progress, nodes)
        return
    jobs = actor_jobs(stages, cfg.ray_actor_scope)
    budget = max(cfg.workers, len(jobs))
    node_gpus = [node.get("GPU", 0.0) for node in nodes]
    cpus_per_actor = actor_cpus([node.get("CPU", 0.0) for node in nodes], budget)
    caps = nvdec_caps(jobs, cfg, sum(node_gpus))
    actor_class = ray.remote(_JobWorker)
    # Every actor of the budget may hold a GPU share (both jobs do on the GPU path), and all must fit.
    needs = [job_resources(job) for job in jobs]
    gpus = [actor_gpus(node_gpus, budget, need.gpus) for need in needs]
    pools = [_Pool(job, actor_class, min(need.cpus, cpus_per_actor), share, actor_context(cfg, share))
             for job, need, share in zip(jobs, needs, gpus, strict=True)]
    # All actors start at once, so their start-up (an interpreter, CUDA, models) overlaps the first
    # tasks: an even split, within the NVDEC cap, until measured stage times re-balance it.
    for pool, count in zip(pools, balance_workers([1.0] * len(jobs), budget, caps), strict=True):
        pool.resize(count)
    # Each queued item is (source, a task or a reference to one in the object store).
    queues: list[deque[tuple[str, Any]]] = [deque() for _ in jobs]
    running: dict[Any, tuple[int, _Actor, str]] = {}
    outstanding: Counter[str] = Counter()
    pending = deque(sources)
    balanced = False

    delivered = 0
    last = len(jobs) - 1

    try:
        while pending or running or any(queues):
            while pending and len(outstanding) < cfg.max_in_flight:
                source = pending.popleft()
                queues[0].append((source, VideoTask(source=source)))
                outstanding[source] += 1
            # Later stages first: finishing work frees memory and inputs before new work starts.
            for index in reversed(range(len(jobs))):
                pool = pools[index]
                while queues[index] and (actor := pool.free_actor()) is not None:
                    source, item = queues[index].popleft()
                    actor.load += 1
                    running[actor.handle.run.remote(item, index < last)] = (index, actor, source)
            ready, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
            for ref in ready:
                index, actor, source = running.pop(ref)
                actor.load -= 1
                outstanding[source] -= 1
                for out in ray.get(ref):
                    if isinstance(out, ray.ObjectRef):
                        queues[index + 1].append((source, out))
                        outstanding[source] += 1
                    else:
                        writer.process(out)
                        delivered += 1
                if outstanding[source] <= 0:
                    del outstanding[source]
                pools[index].release(actor)
            if not balanced and delivered >= cfg.calibration_tasks:
                balanced = True
                seconds = [sum(writer.metrics.wall(stage.name) for stage in job) for job in jobs]
                targets = balance_workers(seconds, budget, caps)
                for pool, target in zip(pools, targets, strict=True):
                    pool.resize(target)
                log.info("curate ray-balance workers=%s", {pool.name: t for pool, t in zip(pools, targets)})
            progress.update(writer.inputs_finished, writer.clips_written)
        log_actor_nodes([actor.handle for pool in pools for actor in pool.actors])
    finally:
        for pool in pools:
            pool.close()
