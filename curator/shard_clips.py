"""Frames of curated clips read back from their shards, for passes over a finished output
(captioning, visual embeddings): a few frames spread over each clip, in shard order."""
from __future__ import annotations

import pathlib
import tarfile
from collections.abc import Iterator

import numpy as np
import pandas as pd

from curator.layout import curated_dirs
from megatron_video.data.decode import decode_frames


def shard_rows(root: str | pathlib.Path) -> pd.DataFrame:
    """The shard writer's catalog rows of a curated output (and its parts), with `shard_file`."""
    frames = []
    for folder in curated_dirs(root):
        for path in sorted((folder / "catalog").glob("*.parquet")):
            rows = pd.read_parquet(path)
            rows["shard_file"] = [str(folder / "shards" / name) for name in rows["shard"]]
            frames.append(rows)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["key", "shard_file"])


def spread_indices(count: int, frames: int) -> np.ndarray:
    """`frames` indices spread evenly over [0, count), centred in equal segments."""
    return np.minimum(((np.arange(frames) + 0.5) * count / frames).astype(np.int64), count - 1)


def clip_frames(rows: pd.DataFrame, frames: int) -> Iterator[tuple[str, np.ndarray]]:
    """(key, uint8 [frames, H, W, 3]) for each row (columns key, shard_file), one shard open at a time."""
    for shard_file, group in rows.groupby("shard_file", sort=True):
        wanted = {f"{key}.mp4": key for key in group["key"]}
        with tarfile.open(shard_file) as tar:
            for member in tar:
                if member.name in wanted:
                    decoded = decode_frames(tar.extractfile(member).read())
                    yield wanted[member.name], decoded[spread_indices(len(decoded), frames)]
