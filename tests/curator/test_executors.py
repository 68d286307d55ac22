"""The Ray runner and the NeMo Curator adapter run the same stages to the same results."""
import logging
import shutil

import pytest

from curator.config import CurateConfig
from curator.executors.ray_runner import balance_workers
from curator.run import curate
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


def test_ray_runner_writes_the_same_clips_as_the_local_executor(two_videos, make_config, read_shards, tmp_path,
                                                               caplog):
    local = curate(make_config(two_videos, tmp_path / "local"), progress=False)
    with caplog.at_level(logging.INFO, logger="curator.executors.ray_runner"):
        ray_run = curate(make_config(two_videos, tmp_path / "ray", executor="ray", calibration_tasks=1,
                                     max_in_flight=1), progress=False)
    # One input at a time, so the second is curated by the pools balanced on the first clip's timings.
    assert any("curate ray-balance" in r.getMessage() for r in caplog.records)
    assert ray_run.inputs_by_status == local.inputs_by_status == {"done": 2}
    local_keys = sorted(k for k, _, _ in read_shards(tmp_path / "local"))
    assert local_keys and sorted(k for k, _, _ in read_shards(tmp_path / "ray")) == local_keys


def test_nemo_curator_executor_runs_a_curator_stage(two_videos, tmp_path):
    from nemo_curator.backends.ray_actor_pool import RayActorPoolExecutor
    from nemo_curator.pipeline import Pipeline

    from curator.executors.nemo import CurationTask, CuratorStage

    (tmp_path / "empty.mp4").write_bytes(b"")
    sources = [str(two_videos / "Megamind.avi"), str(two_videos / "cup.mp4"), str(tmp_path / "empty.mp4")]
    cfg = CurateConfig(device="cpu")
    pipeline = Pipeline(name="probe-only", stages=[CuratorStage(ProbeStage(cfg), cpus=0.5)])
    results = pipeline.run(executor=RayActorPoolExecutor(show_progress=False),
                           initial_tasks=[CurationTask(dataset_name="t", data=VideoTask(source=s)) for s in sources])
    by_source = {r.data.source: r.data for r in results}
    assert set(by_source) == set(sources)
    for source in sources:
        [direct] = ProbeStage(cfg)(VideoTask(source=source))
        assert (by_source[source].status, by_source[source].reason) == (direct.status, direct.reason)
        assert by_source[source].meta == direct.meta
    assert by_source[sources[0]].meta.width == 720 and by_source[sources[2]].reason == "zero-byte file"


@pytest.mark.slow
def test_curate_through_nemo_curator_matches_local(two_videos, make_config, read_shards, tmp_path):
    local = curate(make_config(two_videos, tmp_path / "local"), progress=False)
    nemo = curate(make_config(two_videos, tmp_path / "nemo", executor="nemo"), progress=False)
    assert nemo.inputs_by_status == local.inputs_by_status
    assert sorted(k for k, _, _ in read_shards(tmp_path / "nemo")) == sorted(
        k for k, _, _ in read_shards(tmp_path / "local"))
