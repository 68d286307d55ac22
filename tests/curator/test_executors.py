"""The Ray runner and the NeMo Curator adapter run the same stages to the same results."""
import ast
import logging
import os
import shutil

import pytest

from curator.config import CurateConfig
from curator.run import curate
from curator.stages.base import WorkerContext
from curator.stages.probe import ProbeStage
from curator.tasks import VideoTask
from megatron_video.cpu_cores import available_cores


@pytest.fixture(scope="module")
def two_videos(footage, tmp_path_factory):
    folder = tmp_path_factory.mktemp("two_videos")
    for name in ("Megamind.avi", "cup.mp4"):
        shutil.copy(footage / name, folder / name)
    return folder


@pytest.fixture
def two_node_ray(monkeypatch):
    """A Ray cluster of two nodes with their own raylets on this machine (1 + 2 CPUs, small object
    stores), announced through RAY_ADDRESS as a real cluster would be; torn down afterwards so later
    tests start their own local Ray."""
    import ray
    from ray._common.utils import reset_ray_address
    from ray._private.utils import read_ray_address
    from ray.cluster_utils import Cluster

    ray.shutdown()  # an earlier test may have left this process connected to its local Ray
    store = 150 * 2**20
    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 1, "object_store_memory": store, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=2, object_store_memory=store)
        cluster.wait_for_nodes()
        monkeypatch.setenv("RAY_ADDRESS", cluster.address)
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
        # Cluster records its head as the node's latest cluster, where a plain ray.init() (NeMo
        # Curator's executor makes one) would try to join it after it is gone, and hang.
        if read_ray_address() == cluster.address:
            reset_ray_address()


def test_the_ray_runner_joins_a_cluster_and_spreads_one_actor_per_node_without_gpus(
        two_node_ray, two_videos, make_config, read_shards, tmp_path, caplog, monkeypatch):
    import ray

    killed = []
    kill = ray.kill
    monkeypatch.setattr(ray, "kill", lambda handle: (killed.append(handle), kill(handle)))
    local = curate(make_config(two_videos, tmp_path / "local"), progress=False)
    with caplog.at_level(logging.INFO, logger="curator.executors"):
        ray_run = curate(make_config(two_videos, tmp_path / "ray", executor="ray"), progress=False)
    assert ray.get_runtime_context().gcs_address == two_node_ray.address  # joined, did not start its own
    assert ray_run.inputs_by_status == local.inputs_by_status == {"done": 2}
    local_keys = sorted(k for k, _, _ in read_shards(tmp_path / "local"))
    assert local_keys and sorted(k for k, _, _ in read_shards(tmp_path / "ray")) == local_keys
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("curate ray-nodes ")]
    actors_per_node = ast.literal_eval(line.split("actors_per_node=", 1)[1])
    assert actors_per_node == {node["NodeID"]: 1 for node in ray.nodes()}
    # The run ends its actors itself, rather than leaving their processes to outlive it.
    assert len(killed) == 2


class _Collect:
    """A writer that keeps what it is given."""
    inputs_finished = clips_written = 0

    def __init__(self):
        self.tasks = []

    def process(self, task):
        self.tasks.append(task)


class _Quiet:
    def update(self, inputs, clips):
        pass


def test_nemo_curator_runs_one_pipeline_whose_workers_hand_every_task_to_the_writer(two_videos, tmp_path,
                                                                                     monkeypatch):
    from nemo_curator.pipeline import Pipeline

    from curator.executors.nemo import run_nemo

    (tmp_path / "empty.mp4").write_bytes(b"")
    sources = [str(two_videos / "Megamind.avi"), str(two_videos / "cup.mp4"), str(tmp_path / "empty.mp4")]
    marks = tmp_path / "torn_down"
    marks.mkdir()

    class Probe(ProbeStage):  # records its teardown where the test can see it: workers are processes
        def teardown(self):
            (marks / str(os.getpid())).touch()

    runs = []
    run = Pipeline.run
    monkeypatch.setattr(Pipeline, "run", lambda self, **kw: (runs.append(kw), run(self, **kw))[1])
    writer = _Collect()
    run_nemo(CurateConfig(device="cpu", workers=1, max_in_flight=1), sources, [Probe()], writer, _Quiet())
    assert len(runs) == 1 and len(runs[0]["initial_tasks"]) == 3  # one pipeline for every input
    by_source = {task.source: task for task in writer.tasks}
    assert set(by_source) == set(sources) and len(writer.tasks) == 3
    for source in sources:
        [direct] = ProbeStage()(VideoTask(source=source))
        assert (by_source[source].status, by_source[source].reason) == (direct.status, direct.reason)
        assert by_source[source].meta == direct.meta
    assert by_source[sources[0]].meta.width == 720 and by_source[sources[2]].reason == "zero-byte file"
    assert list(marks.iterdir())  # the worker tore its stages down


def test_nemo_curator_runs_the_curation_stages_together_in_each_worker():
    from curator.executors.nemo import TaskInbox, nemo_pipeline
    from curator.pipeline import build_stages

    cfg = CurateConfig(device="cpu", workers=4)
    inbox = TaskInbox("127.0.0.1")
    stages = build_stages(cfg)
    try:
        [stage] = nemo_pipeline(cfg, stages, inbox).stages
    finally:
        inbox.close()
    assert stage.name == "+".join(s.name for s in stages)
    assert stage.name.startswith("probe+decode+shots+clip_length+crop+") and stage.name.endswith("+encode")
    assert (stage.resources.cpus, stage.resources.gpus) == (1.0, 0.0)
    # Single-threaded workers, `workers` of them sharing the cores.
    assert stage.ctx == WorkerContext(max(1, available_cores() // 4), concurrent_tasks=1, device="cpu")


@pytest.mark.slow
def test_curate_through_nemo_curator_matches_local(two_videos, make_config, read_shards, tmp_path):
    local = curate(make_config(two_videos, tmp_path / "local"), progress=False)
    nemo = curate(make_config(two_videos, tmp_path / "nemo", executor="nemo"), progress=False)
    assert nemo.inputs_by_status == local.inputs_by_status
    assert sorted(k for k, _, _ in read_shards(tmp_path / "nemo")) == sorted(
        k for k, _, _ in read_shards(tmp_path / "local"))


def test_pipeline_actors_take_one_gpu_each_and_its_share_of_the_poorest_nodes_cores():
    from curator.executors.ray_runner import pipeline_slots

    assert pipeline_slots([{"CPU": 32.0, "GPU": 2.0}, {"CPU": 16.0, "GPU": 2.0}]) == (4, 8.0, 1.0)
    assert pipeline_slots([{"CPU": 4.0}, {"CPU": 8.0}]) == (2, 4.0, 0.0)  # no GPUs: one per node
    assert pipeline_slots([{"CPU": 1.0, "GPU": 2.0}]) == (2, 1.0, 1.0)  # never less than a core


def test_pipeline_actors_write_the_same_clips_as_the_local_executor(two_videos, make_config, read_shards, tmp_path,
                                                                      caplog):
    """Each actor runs the local executor's threads on batches of inputs; the driver writes."""
    local = curate(make_config(two_videos, tmp_path / "local"), progress=False)
    with caplog.at_level(logging.INFO, logger="curator.executors.ray_runner"):
        ray_run = curate(make_config(two_videos, tmp_path / "ray", executor="ray"),
                         progress=False)
    assert any(r.getMessage().startswith("curate ray-runner actors=1 ") for r in caplog.records)
    assert ray_run.inputs_by_status == local.inputs_by_status == {"done": 2}
    assert ray_run.metrics.encoder_process_cpu > 0  # the actor's own encoder processes
    local_keys = sorted(k for k, _, _ in read_shards(tmp_path / "local"))
    assert local_keys and sorted(k for k, _, _ in read_shards(tmp_path / "ray")) == local_keys


@pytest.fixture
def ray_with_two_fake_gpus():
    """A local Ray instance declaring two GPUs on this CPU machine (Ray hands GPU ids out by count)."""
    import ray

    ray.shutdown()
    ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()


def test_pipeline_actors_pin_themselves_to_their_gpus_share_of_the_cores(ray_with_two_fake_gpus):
    """As `srun --cpu-bind` does for one process per GPU: actor on GPU i runs on the i-th run of cores."""
    import os

    from curator.executors.ray_runner import gpu_core_share, pin_to_gpu_share

    ray = ray_with_two_fake_gpus

    @ray.remote(num_gpus=1, num_cpus=0)
    class Pinned:
        def cores(self):
            pin_to_gpu_share()
            return int(ray.get_gpu_ids()[0]), sorted(os.sched_getaffinity(0))

    actors = [Pinned.remote() for _ in range(2)]
    got = dict(ray.get([actor.cores.remote() for actor in actors]))
    cores = sorted(os.sched_getaffinity(0))
    assert got == {gpu: gpu_core_share(cores, gpu, node_gpus=2) for gpu in (0, 1)}
    if len(cores) >= 2:  # CI's two cores: one each
        assert got[0] != got[1]


def test_gpu_core_shares_split_the_node_and_never_pin_to_nothing():
    from curator.executors.ray_runner import gpu_core_share

    cores = list(range(32))
    assert gpu_core_share(cores, 1, node_gpus=2) == list(range(16, 32))
    assert gpu_core_share(cores, 3, node_gpus=8) == [12, 13, 14, 15]
    assert gpu_core_share(cores, 0, node_gpus=1) == cores  # one GPU: the whole node
    assert gpu_core_share([0], 1, node_gpus=2) == [0]  # fewer cores than GPUs: no share to pin to


def test_a_pipeline_actor_hands_a_run_fault_to_every_batch(make_config, two_videos, tmp_path):
    """The actor's one executor stops on a RunFault (a fault of the environment): the waiting batch
    and every later one raise it instead of waiting forever."""
    import ray

    from curator.errors import RunFault
    from curator.executors.ray_runner import _PipelineWorker
    from curator.pipeline import build_stages
    from curator.stages.base import Stage

    closed = []

    class Broken(Stage):
        name = "probe"

        def process(self, task):
            raise RunFault("encoder processes cannot start")

        def teardown(self):
            closed.append(self.name)

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=1, include_dashboard=False)
    cfg = make_config(two_videos, tmp_path / "out")
    worker = _PipelineWorker(cfg, [Broken(), *build_stages(cfg)[1:]])
    sources = sorted(str(p) for p in two_videos.iterdir())
    with pytest.raises(RunFault, match="cannot start"):
        worker.run(sources[:1])
    with pytest.raises(RunFault, match="cannot start"):
        worker.run(sources[1:])
    worker.close()  # what the runner asks before it kills the actor: the stages are torn down
    assert closed == ["probe"]


def test_pipeline_actors_share_max_in_flight_in_batches():
    from curator.executors.ray_runner import pipeline_batches

    assert pipeline_batches(64, 2, 96) == (32, 16)  # the benchmark on 2 GPUs: 2 per worker of 16
    assert pipeline_batches(64, 2, 8) == (32, 2)  # a short run: every actor gets two batches
    assert pipeline_batches(3, 4, 100) == (1, 1)  # never less than one
