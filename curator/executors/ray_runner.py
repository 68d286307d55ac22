"""The project's Ray runner: one actor per GPU of the cluster (one per node without GPUs), each
running the local executor's threads (video and clip pools, encoder processes) for the whole run
on the batches of inputs the driver hands it: the local executor spread over a cluster, with the
load balanced batch by batch.

Why this execution model alone (benchmarks/notes.md, "Ray execution models", has the figures):
- Frames never leave the actor that decoded them. Actors per stage sent every video's frames
  through the object store at every stage boundary, and actors per job (a video's stages, then a
  clip's) still sent every clip's; both ran several times slower than this model and were removed.
- One actor per GPU holds one CUDA context and one set of NVDEC sessions per GPU, as the local
  executor does; many small actors per GPU each paid their own and decoded slower.
- Each actor pins itself to its GPU's share of the node's cores (`pin_to_gpu_share`), so the
  executor inside sizes its encoders and library pools for its share, not for the whole node.
- Backpressure: `max_in_flight` is shared among the actors, each holding at most
  BATCHES_PER_ACTOR batches, so memory stays bounded however large the input is.
The writer stays in the driver: it owns the ledger, and commits must be serial. When the run ends,
or fails, the runner has its actors tear their stages down (encoder processes included) and then
kills them, so no process (or CUDA context) lingers into what the driver runs next (`stop_actors`).

Several nodes: start Ray on each node and point the driver at the head through RAY_ADDRESS; with
it set (or with Ray already initialised in the process) the runner joins that cluster instead of
starting a local one. For example, inside one SLURM allocation:

    ray start --head --port=6379                  # on the first node, $HEAD
    ray start --address=$HEAD:6379 --block        # on every other node, e.g. one srun task each
    RAY_ADDRESS=$HEAD:6379 mvideo curate input=/lustre/raw output=/lustre/curated curate=cluster

slurm/curate.sbatch scripts these steps, and stops Ray on every node at the end. Inputs must be
readable from every node (a shared file system or a bucket), because any node's actors may decode
any input; the output only needs to be local to the driver, which writes all shards. At the end
of a run the runner logs `curate ray-nodes actors_per_node={node_id: n}`, which shows whether the
actors really spread over the nodes.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections import Counter, deque
from typing import Any

from curator.config import CurateConfig
from curator.executors.driver import deliver
from curator.executors.local import SourceFeed, run_jobs, setup_stages
from curator.progress import RunProgress
from curator.stages.base import Stage
from curator.stages.shard_writer import ShardWriterStage
from curator.tasks import Task
from megatron_video.cpu_cores import core_shares

log = logging.getLogger(__name__)
# Batches given to an actor at once: its executor starts on the next while the last one finishes.
BATCHES_PER_ACTOR = 2
# How long the runner waits for its actors to tear their stages down before it kills them anyway.
CLOSE_TIMEOUT_S = 30.0


class _Batch:
    """One `run` call's inputs: the tasks they ended as, and an event set once all are finished."""

    def __init__(self, sources: list[str]) -> None:
        self.left = set(sources)
        self.tasks: list[Task] = []
        self.done = threading.Event()


class _Silent:
    """The actor's progress: the driver reports the run's."""

    def update(self, inputs: int, clips: int) -> None:
        pass


class _PipelineWorker:
    """Ray actor body: the whole pipeline on this actor's GPU and cores, set up once, running one
    local executor for the actor's life. `run` calls (up to BATCHES_PER_ACTOR at once: a threaded
    actor) put their inputs into its feed and wait for those inputs alone, so the executor goes on
    decoding the next batch while the last one's clips encode; run batch by batch, every batch
    would end with the video threads idle behind its last encodes."""

    # The executor's writer counters, which this writer leaves to the driver's.
    inputs_finished = clips_written = 0

    def __init__(self, cfg: CurateConfig, stages: list[Stage]):
        pin_to_gpu_share()
        # The local executor sizes its pools, and so its stages' contexts, from `workers`.
        self.cfg = cfg
        self.stages = stages
        setup_stages(cfg, stages)
        self.feed = SourceFeed(closed=False)
        self.lock = threading.Lock()
        self.batches: dict[str, _Batch] = {}  # by input
        self.failure: BaseException | None = None
        self.serving = threading.Thread(target=self._serve, name="curate-pipeline", daemon=True)
        self.serving.start()

    def _serve(self) -> None:
        try:
            run_jobs(self.cfg, self.feed, self.stages, self, _Silent(), finished=self._finished)
        except BaseException as exc:  # noqa: BLE001 - handed to every waiting `run` call, which raises it
            with self.lock:
                self.failure = exc
                for batch in self.batches.values():
                    batch.done.set()

    def process(self, task: Task) -> None:
        """The executor's writer: keep the finished task, without its frames, for its batch."""
        task.drop_frames()
        with self.lock:
            self.batches[task.source].tasks.append(task)

    def _finished(self, source: str) -> None:
        with self.lock:
            batch = self.batches.pop(source)
            batch.left.discard(source)
            if not batch.left:
                batch.done.set()

    def node(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()

    def close(self) -> None:
        """Let the executor finish what it holds, then tear the stages down (encoder processes,
        decoders), as the local executor does at a run's end, rather than leave them to the kill
        that follows."""
        self.feed.close()
        self.serving.join()
        for stage in self.stages:
            stage.teardown()

    def run(self, sources: list[str]) -> list[Task]:
        batch = _Batch(sources)
        with self.lock:
            if self.failure is None:
                self.batches.update(dict.fromkeys(sources, batch))
                self.feed.put(sources)
            else:
                batch.done.set()
        batch.done.wait()
        if self.failure is not None:
            raise self.failure
        return batch.tasks


def gpu_core_share(cores: list[int], gpu_index: int, node_gpus: int) -> list[int]:
    """The cores an actor on GPU `gpu_index` of a node with `node_gpus` GPUs runs on: its GPU's
    share of `cores`, or all of them on a node with one GPU, or with fewer cores than GPUs
    (`pipeline_slots` still gives each actor a core there, so there is no share to pin to)."""
    if node_gpus < 2 or len(cores) < node_gpus:
        return cores
    return core_shares(cores, node_gpus)[gpu_index % node_gpus]


def pin_to_gpu_share() -> None:
    """Bind this actor to its GPU's share of the node's cores, as `srun --cpu-bind` binds one process
    per GPU: Ray places actors by CPU count but does not pin them, and the executor sizes its
    encoders' and libraries' threads from the cores it may run on, so every unpinned actor of a
    node would size them for the whole node. No-op for an actor without a GPU."""
    import ray

    gpu_ids = ray.get_gpu_ids()
    if len(gpu_ids) != 1:
        return
    node_id = ray.get_runtime_context().get_node_id()
    node_gpus = next(int(node["Resources"].get("GPU", 0)) for node in ray.nodes() if node["NodeID"] == node_id)
    os.sched_setaffinity(0, gpu_core_share(sorted(os.sched_getaffinity(0)), int(gpu_ids[0]), node_gpus))


def pipeline_slots(nodes: list[dict[str, float]]) -> tuple[int, float, float]:
    """(actors, CPUs each, GPUs each): one actor per GPU, each with its GPU's share of the cores of
    the poorest node, so that every actor fits wherever its GPU is; one per node without GPUs."""
    gpus = [int(node.get("GPU", 0)) for node in nodes]
    actors = gpus if any(gpus) else [1] * len(nodes)  # on each node
    share = min(node.get("CPU", 0.0) / count for node, count in zip(nodes, actors, strict=True) if count)
    return sum(actors), max(1.0, float(int(share))), 1.0 if any(gpus) else 0.0


def pipeline_batches(max_in_flight: int, actors: int, inputs: int) -> tuple[int, int]:
    """(inputs one actor holds open at most, inputs per batch): `max_in_flight` shared among the
    actors, each share in BATCHES_PER_ACTOR batches, and batches small enough that the last ones
    spread over every actor."""
    share = max(1, max_in_flight // actors)
    return share, max(1, min(share // BATCHES_PER_ACTOR, -(-inputs // (actors * BATCHES_PER_ACTOR))))


def stop_actors(handles: list[Any]) -> None:
    """Let every actor tear its stages down (at most CLOSE_TIMEOUT_S), then kill it: killed at once
    rather than whenever its handle is collected, since each actor is a process (with a CUDA
    context on the GPU path) that would otherwise linger into whatever runs next, such as the
    next curate() call in the same driver."""
    import ray

    try:
        ray.wait([handle.close.remote() for handle in handles], num_returns=len(handles), timeout=CLOSE_TIMEOUT_S)
    finally:
        for handle in handles:
            ray.kill(handle)


def log_actor_nodes(handles: list[Any]) -> None:
    """Log how many of these actors each node holds. Asked once at the end, when the actors that ran
    tasks are long up: asking at placement would stall the driver loop until every new actor had
    finished its setup."""
    import ray

    nodes = ray.get([handle.node.remote() for handle in handles])
    log.info("curate ray-nodes actors_per_node=%s", dict(Counter(nodes)))


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
    count, cpus, gpus = pipeline_slots(nodes)
    share, batch = pipeline_batches(cfg.max_in_flight, count, len(sources))
    if share < 2 * int(cpus):
        # The local executor keeps two inputs per worker open to overlap one video's decode with
        # another's clips; fewer leave an actor's threads waiting for the driver's next batch.
        log.warning("curate ray-runner max_in_flight=%d leaves each of %d actors %d open inputs for %d workers: "
                    "raise curate.max_in_flight to %d", cfg.max_in_flight, count, share, int(cpus),
                    2 * int(cpus) * count)
    actor_cfg = dataclasses.replace(cfg, workers=int(cpus), max_in_flight=share)
    actor_class = ray.remote(_PipelineWorker)
    actors = [actor_class.options(num_cpus=cpus, num_gpus=gpus, scheduling_strategy="SPREAD",
                                  max_concurrency=BATCHES_PER_ACTOR + 1)  # + the final node() call
              .remote(actor_cfg, stages) for _ in range(count)]
    pending = deque(sources)
    running: dict[Any, int] = {}
    load = [0] * count
    log.info("curate ray-runner actors=%d cpus=%.0f gpus=%.0f batch=%d", count, cpus, gpus, batch)
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
                deliver(ray.get(ref), writer, progress)
        log_actor_nodes(actors)
    finally:
        stop_actors(actors)
