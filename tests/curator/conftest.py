"""Shared fixtures for the curation tests: real footage, the demo recipe, one full demo run."""
from __future__ import annotations

import io
import json
import pathlib
import subprocess
import tarfile

import pytest
import yaml

from curator.config import CurateConfig
from curator.run import CurationSummary, curate

ROOT = pathlib.Path(__file__).resolve().parents[2]
SAMPLES = ("Megamind.avi", "vtest.avi", "box.mp4", "cup.mp4", "music_video.mp4")


@pytest.fixture(scope="session")
def footage() -> pathlib.Path:
    """data/samples with the five sample videos, fetched by scripts/fetch_samples.sh if missing."""
    folder = ROOT / "data" / "samples"
    if not all((folder / name).is_file() and (folder / name).stat().st_size for name in SAMPLES):
        subprocess.run([str(ROOT / "scripts" / "fetch_samples.sh"), str(folder)], check=True)
    return folder


def demo_config(input_dir: pathlib.Path, output_dir: pathlib.Path, **overrides) -> CurateConfig:
    fields = yaml.safe_load((ROOT / "recipes" / "curate" / "demo.yaml").read_text())
    fields.update(overrides)
    return CurateConfig(input=str(input_dir), output=str(output_dir), **fields)


@pytest.fixture(scope="session")
def demo_run(footage, tmp_path_factory) -> tuple[CurationSummary, pathlib.Path]:
    """The demo recipe over all five sample videos, run once for every test that reads its output."""
    output = tmp_path_factory.mktemp("demo_out")
    return curate(demo_config(footage, output), progress=False), output


def shard_samples(output: pathlib.Path) -> list[tuple[str, dict, bytes]]:
    """(key, json metadata, mp4 bytes) of every sample in every committed shard, in shard order."""
    samples = []
    for shard in sorted((output / "shards").glob("shard-*.tar")):
        with tarfile.open(shard) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        for name in sorted(members):
            if name.endswith(".json"):
                key = name[:-len(".json")]
                samples.append((key, json.loads(members[name]), members[f"{key}.mp4"]))
    return samples


def decode_mp4(data: bytes) -> tuple[list, float, int, int]:
    """(frames as RGB arrays, fps, height, width) of an in-memory MP4."""
    import av

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return frames, float(stream.average_rate), stream.height, stream.width


# Test modules load in importlib mode and cannot import this file, so helpers travel as fixtures.
@pytest.fixture(scope="session")
def make_config():
    return demo_config


@pytest.fixture(scope="session")
def read_shards():
    return shard_samples


@pytest.fixture(scope="session")
def decode():
    return decode_mp4
