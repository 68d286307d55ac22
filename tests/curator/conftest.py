"""Shared fixtures for the curation tests: reading shards and decoding their clips."""
from __future__ import annotations

import io
import json
import pathlib
import tarfile

import pytest


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


# Test modules load in importlib mode and cannot import this file, so helpers travel as fixtures
# (`footage`, `make_config` and `demo_run` live in tests/conftest.py: tests/data and tests/e2e read
# the demo run too).
@pytest.fixture(scope="session")
def read_shards():
    return shard_samples


@pytest.fixture(scope="session")
def decode():
    return decode_mp4
