"""NeMo Curator adapter: the whole run as one NeMo Curator `Pipeline`, run by its executors
(RayActorPoolExecutor, XennaExecutor, RayDataExecutor) at cluster scale.

The pipeline holds one ProcessingStage, `CuratorStage`, which runs every curation stage on one
input inside its worker, as the Ray runner's actors do: a video's frames never enter NeMo's object
store (the actor-pool executor runs stage by stage, so any stage boundary would hold every input's
frames at once). A worker sets the curation stages up once, in `setup`, and tears them down in
`teardown`. Instead of returning its clips, which the executor would collect until the whole run
ends, the stage hands each finished or rejected task (frames dropped) to the driver over an
authenticated connection (`TaskInbox`) and waits until the driver's writer has taken it: the
writer, which owns the ledger, commits shards and records inputs while the run goes on, and a
worker is never more than one task ahead of it.
"""
from __future__ import annotations

import contextlib
import logging
import os
import queue
import secrets
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Client, Connection, Listener
from typing import Any

from nemo_curator.backends.base import BaseExecutor
from nemo_curator.pipeline import Pipeline
from nemo_curator.stages.base import ProcessingStage
from nemo_curator.stages.resources import Resources as NemoResources
from nemo_curator.tasks import Task as NemoTask

from curator.config import CurateConfig
from curator.executors.driver import deliver
from curator.pipeline import job_resources, run_depth_first
from curator.progress import RunProgress
from curator.stages.base import Stage, WorkerContext
from curator.stages.shard_writer import ShardWriterStage
from curator.tasks import Task, VideoTask
from megatron_video.cpu_cores import available_cores

log = logging.getLogger(__name__)


@dataclass
class CurationTask(NemoTask[Any]):
    """A curator VideoTask carried through NeMo Curator."""

    @property
    def num_items(self) -> int:
        return 1

    def validate(self) -> bool:
        return isinstance(self.data, Task)


class TaskInbox:
    """The driver's end: a listening socket that NeMo Curator's workers connect to, one thread per
    connection receiving tasks, and the queue the driver's loop takes them from. A task's sender
    gets its answer once the driver calls the `taken` event that comes with it."""

    def __init__(self, host: str) -> None:
        self.authkey = secrets.token_bytes(32)
        self._listener = Listener((host, 0), authkey=self.authkey)
        self.address: tuple[str, int] = self._listener.address
        self.received: queue.Queue[tuple[Task, threading.Event]] = queue.Queue()
        self._connections: list[Connection] = []
        self._closed = False
        threading.Thread(target=self._accept, name="curate-nemo-inbox", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                connection = self._listener.accept()
            except OSError:  # closed, or a peer without the key (AuthenticationError)
                continue
            self._connections.append(connection)
            threading.Thread(target=self._receive, args=(connection,), name="curate-nemo-worker", daemon=True).start()

    def _receive(self, connection: Connection) -> None:
        try:
            while True:
                task = connection.recv()
                taken = threading.Event()
                self.received.put((task, taken))
                taken.wait()
                connection.send(True)
        except (EOFError, OSError):  # the worker tore down, or the inbox closed
            connection.close()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        for connection in self._connections:
            connection.close()


class CuratorStage(ProcessingStage[CurationTask, CurationTask]):
    """The curation's stages behind NeMo Curator's stage interface, run one after the other on each
    input in the same worker; their finished tasks go to the driver's inbox, so the stage returns
    none."""

    def __init__(self, stages: list[Stage], ctx: WorkerContext, inbox: tuple[tuple[str, int], bytes]):
        self.stages = stages
        self.ctx = ctx
        self.inbox = inbox  # (address, authkey)
        self.name = "+".join(stage.name for stage in stages)
        needs = job_resources(stages)
        self.resources = NemoResources(cpus=needs.cpus, gpus=needs.gpus)
        self._connection: Connection | None = None

    def inputs(self) -> tuple[list[str], list[str]]:
        return ["data"], []

    def outputs(self) -> tuple[list[str], list[str]]:
        return [], []

    def setup(self, worker_metadata: Any = None) -> None:
        for stage in self.stages:
            stage.setup(self.ctx)
        address, authkey = self.inbox
        self._connection = Client(address, authkey=authkey)

    def process(self, task: CurationTask) -> list[CurationTask]:
        for out in run_depth_first(self.stages, task.data):
            out.drop_frames()
            self._connection.send(out)
            self._connection.recv()  # the driver's writer has it
        return []

    def teardown(self) -> None:
        if self._connection is not None:
            self._connection.close()
        for stage in self.stages:
            stage.teardown()


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


def driver_host() -> str:
    """The address workers reach the driver at: loopback for a Ray started here, the host's own
    address when the driver joins a cluster (RAY_ADDRESS), whose workers run on other nodes."""
    return socket.gethostbyname(socket.gethostname()) if os.environ.get("RAY_ADDRESS") else "127.0.0.1"


@contextlib.contextmanager
def own_ray_unless_given() -> Iterator[None]:
    """NeMo Curator's executors call `ray.init()` without an address, which joins any Ray instance
    running on this machine (another user's, or one a crash left behind). Unless RAY_ADDRESS names
    the cluster to join, point them at a Ray of their own ("local") while the pipeline runs."""
    if os.environ.get("RAY_ADDRESS"):
        yield
        return
    os.environ["RAY_ADDRESS"] = "local"
    try:
        yield
    finally:
        del os.environ["RAY_ADDRESS"]


def nemo_pipeline(cfg: CurateConfig, stages: list[Stage], inbox: TaskInbox) -> Pipeline:
    worker = CuratorStage(stages, worker_context(cfg, job_resources(stages).gpus), (inbox.address, inbox.authkey))
    return Pipeline(name="megatron-video-curate", stages=[worker])


def run_nemo(cfg: CurateConfig, sources: list[str], stages: list[Stage], writer: ShardWriterStage,
             progress: RunProgress) -> None:
    if not sources:
        return
    inbox = TaskInbox(driver_host())
    pipeline = nemo_pipeline(cfg, stages, inbox)
    executor = make_executor(cfg.nemo_backend)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            pipeline.run(executor=executor, initial_tasks=[CurationTask(dataset_name="curate", data=VideoTask(source=s))
                                                           for s in sources])
        except BaseException as exc:  # noqa: BLE001 - raised again on the driver's thread
            failure.append(exc)

    runner = threading.Thread(target=run, name="curate-nemo-pipeline", daemon=True)
    with own_ray_unless_given():
        runner.start()
        _take_until_done(runner, inbox, writer, progress)
    if failure:
        raise failure[0]


def _take_until_done(runner: threading.Thread, inbox: TaskInbox, writer: ShardWriterStage,
                     progress: RunProgress) -> None:
    try:
        # Every task a worker sends is answered only once the writer has it, so once the pipeline
        # has returned, nothing is left to take.
        while True:
            try:
                task, taken = inbox.received.get(timeout=1.0)
            except queue.Empty:
                if runner.is_alive():
                    continue
                break
            deliver([task], writer, progress)
            taken.set()
    finally:
        inbox.close()
