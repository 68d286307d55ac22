"""The Ray runner and the NeMo Curator adapter run the same stages to the same results."""
import ast
import logging
import shutil

import cv2
import pytest

from curator.config import CurateConfig
from curator.executors.ray_runner import (
    _JobWorker,
    _Pool,
    actor_cpus,
    actor_gpus,
    balance_workers,
    nvdec_caps,
)
from curator.run import curate
from curator.stages.base import WorkerContext
from curator.stages.probe import ProbeStage
from curator.tasks import VideoTask


@pytest.fixture(scope="module")
def two_videos(footage, tmp_path_factory):
    folder = tmp_path_factory.mktemp("two_videos")
    for name in ("Megamind.avi", "cup.mp4"):
        shutil.copy(footage / name, folder / name)
    return folder


def test_balance_follows_measured_stage_time():
    assert balance_workers([1.0, 1.0, 8.0], budget=10) == [1, 1, 8]
    assert balance_workers([0.0, 0.0], budget=1) == [1, 1]
    workers = balance_workers([0.1, 3.0, 1.0, 5.9], budget=16)
    assert sum(workers) == 16 and min(workers) == 1
    assert workers[3] > workers[1] > workers[2] >= workers[0]


def test_balance_keeps_capped_stages_within_their_cap():
    # Decode takes most of the time but may have 4 actors: the other stages share what it cannot take.
    assert balance_workers([1.0, 8.0, 1.0], budget=16, caps=[None, 4, None]) == [6, 4, 6]
    assert balance_workers([1.0, 8.0, 1.0], budget=16, caps=[None, 20, None]) == balance_workers([1.0, 8.0, 1.0], 16)
    # Caps everywhere: fewer workers than the budget rather than more than a cap.
    assert balance_workers([1.0, 1.0], budget=16, caps=[2, 3]) == [2, 3]


def test_nvdec_jobs_are_capped_by_the_sessions_per_gpu():
    from curator.stages.base import Resources, Stage

    class Decoding(Stage):
        resources = Resources(gpus=0.1, nvdec=True)

    cfg = CurateConfig(nvdec_sessions=8, actor_threads=2)
    jobs = [[ProbeStage(), Decoding()], [ProbeStage()]]  # a job holding NVDEC, one that does not
    assert nvdec_caps(jobs, cfg, gpus=1.0) == [4, None]
    assert nvdec_caps(jobs, cfg, gpus=4.0) == [16, None]
    assert nvdec_caps(jobs, CurateConfig(nvdec_sessions=1, actor_threads=2), gpus=0.0) == [1, None]


@pytest.mark.parametrize(("scope", "pools"), [
    # By default the actors run whole jobs, as the local executor's threads do: a video's frames
    # never cross actors between its stages, only clips do.
    ("job", {"probe+decode+shots+clip_length", "crop+resize+encode"}),
    ("stage", {"probe", "decode", "shots", "clip_length", "crop", "resize", "encode"}),
])
def test_ray_runner_writes_the_same_clips_as_the_local_executor(scope, pools, two_videos, make_config, read_shards,
                                                               tmp_path, caplog):
    local = curate(make_config(two_videos, tmp_path / "local"), progress=False)
    with caplog.at_level(logging.INFO, logger="curator.executors"):
        ray_run = curate(make_config(two_videos, tmp_path / "ray", executor="ray", calibration_tasks=1,
                                     max_in_flight=1, ray_actor_scope=scope), progress=False)
    # One input at a time, so the second is curated by the pools balanced on the first clip's timings.
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("curate ray-balance ")]
    assert set(ast.literal_eval(line.split("workers=", 1)[1])) == pools
    assert ray_run.inputs_by_status == local.inputs_by_status == {"done": 2}
    # Each clip actor runs `actor_threads` clips at once, so it encodes in processes of its own.
    assert ray_run.metrics.encoder_process_cpu > 0
    local_keys = sorted(k for k, _, _ in read_shards(tmp_path / "local"))
    assert local_keys and sorted(k for k, _, _ in read_shards(tmp_path / "ray")) == local_keys


def test_job_actors_hand_on_references_and_return_finished_tasks_without_frames():
    """Tasks going on to another job stay in the object store (the driver only routes their
    references); finished or rejected ones come back by value, without their frames."""
    import numpy as np
    import ray

    from curator.stages.base import Stage
    from curator.tasks import SKIPPED, FrameAnalysis

    class Analyse(Stage):
        name = "analyse"

        def process(self, task):
            task.analysis = FrameAnalysis(small=np.zeros((4, 8, 8, 3), np.uint8),
                                          thumbs=np.zeros((4, 27, 48, 3), np.uint8))
            if task.source == "bad.mp4":
                task.reject(SKIPPED, "bad")
            return [task]

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=1, include_dashboard=False)
    worker = _JobWorker([Analyse()], library_threads=cv2.getNumThreads(), ctx=WorkerContext(1, 1))
    [ref] = worker.run(VideoTask(source="a.mp4"), forward=True)
    assert isinstance(ref, ray.ObjectRef) and ray.get(ref).analysis.small.shape == (4, 8, 8, 3)
    [finished] = worker.run(VideoTask(source="a.mp4"), forward=False)
    [rejected] = worker.run(VideoTask(source="bad.mp4"), forward=True)
    assert finished.ok and finished.analysis is None
    assert rejected.reason == "bad" and rejected.analysis is None


def test_job_actors_cap_opencvs_pool_at_their_cpu_share(monkeypatch):
    calls = []
    monkeypatch.setattr(cv2, "setNumThreads", calls.append)
    _JobWorker([ProbeStage()], library_threads=1, ctx=WorkerContext(1, 1))
    assert calls == [1]


def test_pools_retire_the_least_loaded_actors_once_they_hold_no_tasks(monkeypatch):
    import ray

    closed, killed = [], []
    monkeypatch.setattr(ray, "kill", lambda handle: killed.append(handle.name))
    monkeypatch.setattr(ray, "wait", lambda refs, **options: (refs, []))

    class Handle:  # an actor handle: handle.close.remote() asks the actor to close its stages
        def __init__(self, name):
            self.name, self.close = name, self

        def remote(self):
            closed.append(self.name)

    class Actors:  # stands in for a ray.remote class: options(...).remote(...) makes a handle
        made = 0

        @classmethod
        def options(cls, **resources):
            return cls

        @classmethod
        def remote(cls, stages, library_threads, ctx):
            cls.made += 1
            return Handle(f"actor{cls.made}")

    pool = _Pool([ProbeStage()], Actors, cpus=1.0, gpus=0.0, ctx=WorkerContext(2, concurrent_tasks=2))
    pool.resize(3)
    busy, holding_one, _idle = pool.actors
    busy.load, holding_one.load = 2, 1
    pool.resize(1)  # the two least loaded retire: the idle one at once, the other after its task
    assert killed == ["actor3"] and pool.actors == [busy, holding_one]
    assert pool.free_actor() is None  # the busy one is full and a retiring one takes no tasks
    holding_one.load = 0
    pool.release(holding_one)
    assert killed == ["actor3", "actor2"] and pool.actors == [busy]
    busy.load = 1
    assert pool.free_actor() is busy
    pool.resize(2)
    assert [a.handle.name for a in pool.actors] == ["actor1", "actor4"] and killed == ["actor3", "actor2"]
    assert closed == killed  # every actor closes its stages before it is killed


def test_actor_share_fits_whole_actors_on_each_node():
    # 3 CPUs / 7 actors = 0.43 fits only 2 + 4 actors on nodes of 1 and 2 CPUs; 0.4 fits 2 + 5.
    assert actor_cpus([1.0, 2.0], budget=7) == 0.4
    assert actor_cpus([2.0], budget=7) == 0.2857
    assert actor_cpus([0.0, 16.0, 16.0], budget=128) == 0.25  # a head started with no CPUs holds none
    assert actor_cpus([8.0], budget=2) == 1.0


def test_actor_gpu_share_fits_every_actor_within_single_devices():
    # 16 actors wanting 0.1 GPU each on one GPU: they get 1/16, or the last six would never start.
    assert actor_gpus([1.0], actors=16, wanted=0.1) == 0.0625
    assert actor_gpus([8.0, 8.0], actors=16, wanted=0.1) == 0.1
    # 3 actors on one 2-GPU node: 2/3 GPU each would fit by the node's total, but not within devices.
    assert actor_gpus([2.0], actors=3, wanted=1.0) == 0.5
    assert actor_gpus([0.0], actors=3, wanted=0.0) == 0.0  # CPU-only jobs need no GPU anywhere
    with pytest.raises(RuntimeError, match="no GPU|has none"):
        actor_gpus([0.0, 0.0], actors=3, wanted=0.1)


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


def test_ray_runner_spreads_job_actors_over_nodes(two_node_ray, two_videos, make_config, read_shards, tmp_path,
                                                  caplog, monkeypatch):
    import ray

    killed = []
    kill = ray.kill
    monkeypatch.setattr(ray, "kill", lambda handle: (killed.append(handle), kill(handle)))
    local = curate(make_config(two_videos, tmp_path / "local"), progress=False)
    with caplog.at_level(logging.INFO, logger="curator.executors"):
        ray_run = curate(make_config(two_videos, tmp_path / "ray", executor="ray"), progress=False)
    assert ray.get_runtime_context().gcs_address == two_node_ray.address  # joined, did not start its own
    assert ray_run.inputs_by_status == local.inputs_by_status == {"done": 2}
    # Each clip actor runs `actor_threads` clips at once, so it encodes in processes of its own.
    assert ray_run.metrics.encoder_process_cpu > 0
    local_keys = sorted(k for k, _, _ in read_shards(tmp_path / "local"))
    assert local_keys and sorted(k for k, _, _ in read_shards(tmp_path / "ray")) == local_keys
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("curate ray-nodes ")]
    actors_per_node = ast.literal_eval(line.split("actors_per_node=", 1)[1])
    assert set(actors_per_node) == {node["NodeID"] for node in ray.nodes()}
    assert sum(actors_per_node.values()) == 2  # one per job: the demo's 2 workers, one video, one clip actor
    # The run ends its actors itself, rather than leaving their processes to outlive it.
    assert len(killed) == 2



def test_pipeline_actors_spread_one_per_node_without_gpus(two_node_ray, two_videos, make_config, read_shards,
                                                          tmp_path, caplog):
    import ray

    with caplog.at_level(logging.INFO, logger="curator.executors"):
        ray_run = curate(make_config(two_videos, tmp_path / "ray", executor="ray", ray_actor_scope="pipeline"),
                         progress=False)
    assert ray_run.inputs_by_status == {"done": 2} and ray_run.clips_written > 0
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("curate ray-nodes ")]
    actors_per_node = ast.literal_eval(line.split("actors_per_node=", 1)[1])
    assert actors_per_node == {node["NodeID"]: 1 for node in ray.nodes()}

def test_nemo_curator_executor_runs_a_curator_stage(two_videos, tmp_path):
    from nemo_curator.backends.ray_actor_pool import RayActorPoolExecutor
    from nemo_curator.pipeline import Pipeline

    from curator.executors.nemo import CurationTask, CuratorStage

    (tmp_path / "empty.mp4").write_bytes(b"")
    sources = [str(two_videos / "Megamind.avi"), str(two_videos / "cup.mp4"), str(tmp_path / "empty.mp4")]
    cfg = CurateConfig(device="cpu")
    one_stage = CuratorStage(ProbeStage.from_config(cfg), cpus=0.5, ctx=WorkerContext(1, 1))
    pipeline = Pipeline(name="probe-only", stages=[one_stage])
    results = pipeline.run(executor=RayActorPoolExecutor(show_progress=False),
                           initial_tasks=[CurationTask(dataset_name="t", data=VideoTask(source=s)) for s in sources])
    by_source = {r.data.source: r.data for r in results}
    assert set(by_source) == set(sources)
    for source in sources:
        [direct] = ProbeStage.from_config(cfg)(VideoTask(source=source))
        assert (by_source[source].status, by_source[source].reason) == (direct.status, direct.reason)
        assert by_source[source].meta == direct.meta
    assert by_source[sources[0]].meta.width == 720 and by_source[sources[2]].reason == "zero-byte file"


@pytest.mark.parametrize(("scope", "names"), [
    ("job", ["probe+decode+shots+clip_length", "crop+resize+encode"]),
    ("stage", ["probe", "decode", "shots", "clip_length", "crop", "resize", "encode"]),
    ("pipeline", ["probe+decode+shots+clip_length+crop+resize+encode"]),
])
def test_nemo_curator_stages_group_the_pipeline_as_the_ray_runner_does(scope, names):
    from curator.executors.nemo import nemo_pipeline
    from curator.pipeline import build_stages

    cfg = CurateConfig(device="cpu", workers=4, ray_actor_scope=scope)
    pipeline = nemo_pipeline(cfg, build_stages(cfg))
    assert [stage.name for stage in pipeline.stages] == names
    assert all(stage.resources.cpus <= 4 / len(names) for stage in pipeline.stages)


@pytest.mark.slow
def test_curate_through_nemo_curator_matches_local(two_videos, make_config, read_shards, tmp_path):
    local = curate(make_config(two_videos, tmp_path / "local"), progress=False)
    nemo = curate(make_config(two_videos, tmp_path / "nemo", executor="nemo"), progress=False)
    assert nemo.inputs_by_status == local.inputs_by_status
    assert sorted(k for k, _, _ in read_shards(tmp_path / "nemo")) == sorted(
        k for k, _, _ in read_shards(tmp_path / "local"))


def test_pipeline_actors_take_one_gpu_each_and_its_share_of_the_poorest_nodes_cores():
    from curator.executors.ray_pipelines import pipeline_slots

    assert pipeline_slots([{"CPU": 32.0, "GPU": 2.0}, {"CPU": 16.0, "GPU": 2.0}]) == (4, 8.0, 1.0)
    assert pipeline_slots([{"CPU": 4.0}, {"CPU": 8.0}]) == (2, 4.0, 0.0)  # no GPUs: one per node
    assert pipeline_slots([{"CPU": 1.0, "GPU": 2.0}]) == (2, 1.0, 1.0)  # never less than a core


def test_pipeline_actors_write_the_same_clips_as_the_local_executor(two_videos, make_config, read_shards, tmp_path,
                                                                      caplog):
    """Each actor runs the local executor's threads on batches of inputs; the driver writes."""
    local = curate(make_config(two_videos, tmp_path / "local"), progress=False)
    with caplog.at_level(logging.INFO, logger="curator.executors.ray_pipelines"):
        ray_run = curate(make_config(two_videos, tmp_path / "ray", executor="ray", ray_actor_scope="pipeline"),
                         progress=False)
    assert any(r.getMessage().startswith("curate ray-pipelines actors=1 ") for r in caplog.records)
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

    from curator.executors.ray_pipelines import gpu_core_share, pin_to_gpu_share

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
    from curator.executors.ray_pipelines import gpu_core_share

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
    from curator.executors.ray_pipelines import _PipelineWorker
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
    from curator.executors.ray_pipelines import pipeline_batches

    assert pipeline_batches(64, 2, 96) == (32, 16)  # the benchmark on 2 GPUs: 2 per worker of 16
    assert pipeline_batches(64, 2, 8) == (32, 2)  # a short run: every actor gets two batches
    assert pipeline_batches(3, 4, 100) == (1, 1)  # never less than one
