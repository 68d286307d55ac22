"""Shared fixtures for the curation tests: reading shards and decoding their clips."""
from __future__ import annotations

import io
import json
import os
import pathlib
import tarfile

import numpy as np
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


# Streams NVDEC's path refuses or takes (curator/video/nvdec_support.py), as the GPU curation issue
# met them: name -> (codec, pixel format, container options, why NVDEC is refused or "" if taken).
FORMATS = {
    "h264.mp4": ("libx264", "yuv420p", {}, ""),
    "h264.mkv": ("libx264", "yuv420p", {}, ""),
    "hevc.mp4": ("libx265", "yuv420p", {"x265-params": "log-level=error"}, ""),
    "vp9.webm": ("libvpx-vp9", "yuv420p", {"deadline": "realtime", "cpu-used": "8"}, ""),
    "h264_10bit.mp4": ("libx264", "yuv420p10le", {}, "pixel format"),
    "h264_444.mp4": ("libx264", "yuv444p", {}, "pixel format"),
    "h264.avi": ("libx264", "yuv420p", {}, "container"),
    "prores_422_10bit.mov": ("prores_ks", "yuv422p10le", {}, "codec"),
    "mjpeg.avi": ("mjpeg", "yuvj420p", {}, "codec"),
    "mpeg4.avi": ("mpeg4", "yuv420p", {}, "codec"),
    "msmpeg4.avi": ("msmpeg4v3", "yuv420p", {}, "codec"),
    "av1.mp4": ("libsvtav1", "yuv420p", {"preset": "12"}, "codec"),
}


def write_format_zoo(folder: pathlib.Path, frames) -> dict[str, str]:
    """The RGB `frames` written once per entry of FORMATS into `folder`, plus a corrupt, a truncated
    and an empty file; returns name -> expected NVDEC refusal ('' where NVDEC takes it)."""
    import av

    folder.mkdir(parents=True, exist_ok=True)
    # SVT-AV1 switches the thread that opens it to SCHED_FIFO at priority 99 (as root): put this
    # process's scheduling back, or later tests (the encoder priority ones) see it.
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    for name, (codec, pix_fmt, options, _) in FORMATS.items():
        with av.open(str(folder / name), mode="w") as out:
            stream = out.add_stream(codec, rate=24)
            stream.height, stream.width = frames.shape[1:3]
            stream.pix_fmt = pix_fmt
            stream.options = options
            for i, rgb in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                frame.pts = i
                out.mux(stream.encode(frame))
            out.mux(stream.encode(None))
        os.sched_setscheduler(0, policy, param)
    mkv = (folder / "h264.mkv").read_bytes()
    (folder / "truncated.mkv").write_bytes(mkv[: len(mkv) * 5 // 6])
    (folder / "corrupt.mp4").write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 1 << 16, dtype=np.uint8)))
    (folder / "empty.mp4").write_bytes(b"")
    return {name: refusal for name, (*_, refusal) in FORMATS.items()}


@pytest.fixture(scope="session")
def format_zoo():
    return write_format_zoo


def write_curated_output(root: pathlib.Path, clips: dict[str, np.ndarray], fps: float = 8.0) -> pathlib.Path:
    """A curated output as the shard writer lays it out (one shard, its catalog rows), holding the
    given clips (key -> uint8 frames [T, H, W, 3]): the input of the post-curation passes."""
    import pandas as pd

    from megatron_video.inference.video_io import write_mp4

    (root / "shards").mkdir(parents=True)
    (root / "catalog").mkdir()
    rows = []
    with tarfile.open(root / "shards" / "shard-000000.tar", "w") as tar:
        for key, frames in clips.items():
            data = write_mp4(frames, root / f"{key}.mp4", fps).read_bytes()
            (root / f"{key}.mp4").unlink()
            row = {"key": key, "shard": "shard-000000.tar", "num_frames": len(frames),
                   "duration_s": len(frames) / fps, "height": frames.shape[1], "width": frames.shape[2]}
            for name, payload in ((f"{key}.mp4", data), (f"{key}.json", json.dumps(row).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
            rows.append(row)
    pd.DataFrame(rows).to_parquet(root / "catalog" / "shard-000000.parquet", index=False)
    return root


@pytest.fixture(scope="session")
def curated_output():
    return write_curated_output
