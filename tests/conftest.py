"""Suite-wide fixtures: GPU tests are skipped (and reported) where no GPU is visible; real footage
and shards cut by hand from it (independent of the curation pipeline) for data/training tests; one
run of the demo curation recipe over all the sample footage, shared by every area that reads it."""
import importlib.util
import json
import os
import pathlib
import subprocess

import av
import numpy as np
import pytest
import torch
import webdataset as wds
import yaml

from megatron_video.inference.video_io import write_mp4
from megatron_video.parallel.state import ParallelConfig, init_distributed
from megatron_video.testing import leaks

# Without a GPU the Triton kernels of tests/kernels run interpreted. Triton reads TRITON_INTERPRET
# when a function is decorated, its own library functions (tl.sum's combine) included, so this must
# precede the first import of triton, which megatron-core imports: here, before any test module.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

ROOT = pathlib.Path(__file__).resolve().parents[1]
SAMPLES = ("Megamind.avi", "vtest.avi", "box.mp4", "cup.mp4", "music_video.mp4")


# Seconds a process orphaned at the session's end may take to finish exiting before it counts as leaked.
ORPHAN_GRACE_S = 30
LEAK_MARK = pytest.StashKey[str]()
# pid -> the test after which the orphan was first seen (a scan of /proc after every test).
FIRST_SEEN: dict[int, str] = {}


def pytest_sessionstart(session):
    session.stash[LEAK_MARK] = leaks.mark_session()


def pytest_runtest_logfinish(nodeid, location):
    for pid in leaks.orphans(os.environ[leaks.MARK]):
        FIRST_SEEN.setdefault(pid, nodeid)


def pytest_sessionfinish(session, exitstatus):
    """Name the processes the tests left behind (workers whose parent died or never stopped them),
    with the test after which each was first seen, in red, kill them so they stop using the
    machine, and fail the session: each is a defect to fix in the test or code named."""
    lost = leaks.wait_for_orphans(session.stash[LEAK_MARK], ORPHAN_GRACE_S)
    if not lost:
        return
    leaks.kill_orphans(lost)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter:
        reporter.ensure_newline()
        reporter.write_sep("=", f"{len(lost)} process(es) left behind by the tests (killed now)", red=True)
    for pid, cmdline in lost.items():
        seen = FIRST_SEEN.get(pid, "the session's end")
        (reporter.write_line if reporter else print)(f"pid {pid}, first seen after {seen}: {cmdline}")
    if session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU: run scripts/gpu_check.sh on the GPU machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def megatron_single():
    """A one-rank gloo group with megatron's parallel_state, for single-process model tests."""
    init_distributed(ParallelConfig(), torch.device("cpu"), seed=1234)


@pytest.fixture(scope="session")
def samples_dir() -> pathlib.Path:
    folder = ROOT / "data" / "samples"
    if not (folder / "Megamind.avi").exists():
        subprocess.run([str(ROOT / "scripts" / "fetch_samples.sh"), str(folder)], check=True)
    return folder


def megamind_frames(samples_dir: pathlib.Path, stop: int = 96) -> np.ndarray:
    with av.open(str(samples_dir / "Megamind.avi")) as container:
        frames = []
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24", width=112, height=64))
            if len(frames) == stop:
                break
    return np.stack(frames)


@pytest.fixture(scope="session")
def shard_root(tmp_path_factory, samples_dir) -> pathlib.Path:
    """Two shards of 8 clips of 12 frames each, plus one corrupt mp4 in the second shard."""
    root = tmp_path_factory.mktemp("curated")
    (root / "shards").mkdir()
    frames = megamind_frames(samples_dir)
    clip_dir = tmp_path_factory.mktemp("clips")
    for shard in range(2):
        with wds.TarWriter(str(root / "shards" / f"shard-{shard:06d}.tar")) as sink:
            for index in range(4):
                start = (shard * 4 + index) * 12
                key = f"megamind_{start:06d}"
                path = write_mp4(frames[start:start + 12], clip_dir / f"{key}.mp4", fps=12)
                meta = {"key": key, "source": "data/samples/Megamind.avi", "start_frame": start}
                sink.write({"__key__": key, "mp4": path.read_bytes(), "json": json.dumps(meta).encode()})
            if shard == 1:
                sink.write({"__key__": "broken_000000", "mp4": b"\x00not an mp4",
                            "json": json.dumps({"key": "broken_000000", "source": "x.mp4"}).encode()})
    return root


@pytest.fixture(scope="session")
def footage() -> pathlib.Path:
    """data/samples with the five sample videos, fetched by scripts/fetch_samples.sh if missing."""
    folder = ROOT / "data" / "samples"
    if not all((folder / name).is_file() and (folder / name).stat().st_size for name in SAMPLES):
        subprocess.run([str(ROOT / "scripts" / "fetch_samples.sh"), str(folder)], check=True)
    return folder


def demo_config(input_dir: pathlib.Path, output_dir: pathlib.Path, **overrides):
    from curator.config import CurateConfig  # imported here: most test areas never curate

    fields = yaml.safe_load((ROOT / "recipes" / "curate" / "demo.yaml").read_text())
    fields.update(overrides)
    return CurateConfig(input=str(input_dir), output=str(output_dir), **fields)


@pytest.fixture(scope="session")
def demo_run(footage, tmp_path_factory) -> tuple:
    """(CurationSummary, output dir) of the demo recipe over all five sample videos, run once for
    every test that reads its output."""
    from curator.run import curate

    output = tmp_path_factory.mktemp("demo_out")
    return curate(demo_config(footage, output), progress=False), output


# Test modules load in importlib mode and cannot import this file, so helpers travel as fixtures.
@pytest.fixture(scope="session")
def make_config():
    return demo_config


@pytest.fixture(scope="session")
def load_benchmark():
    """benchmarks/<name>.py as a module (benchmarks/ is not a package: the scripts run by path)."""
    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"_bench_{name}", ROOT / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load
