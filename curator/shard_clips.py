"""Frames of curated clips read back from their shards, for passes over a finished output
(captioning, visual embeddings): a few frames spread over each clip, in shard order."""
from __future__ import annotations

import tarfile
from collections.abc import Iterator

import numpy as np
import pandas as pd

from megatron_video.data.catalog import SHARD_PATH
from megatron_video.data.decode import decode_frames


def spread_indices(count: int, frames: int) -> np.ndarray:
    """`frames` indices spread evenly over [0, count), centred in equal segments."""
    return np.minimum(((np.arange(frames) + 0.5) * count / frames).astype(np.int64), count - 1)


def clip_frames(rows: pd.DataFrame, frames: int) -> Iterator[tuple[str, np.ndarray]]:
    """(key, uint8 [frames, H, W, 3]) for each row of the catalog's shard index, one shard open at a time."""
    for shard_file, group in rows.groupby(SHARD_PATH, sort=True):
        wanted = {f"{key}.mp4": key for key in group["key"]}
        with tarfile.open(shard_file) as tar:
            for member in tar:
                if member.name in wanted:
                    decoded = decode_frames(tar.extractfile(member).read())
                    yield wanted[member.name], decoded[spread_indices(len(decoded), frames)]
