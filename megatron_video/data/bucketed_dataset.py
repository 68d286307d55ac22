"""Training batches by bucket (`data.buckets`) or packed to a token budget (`data.packing`).

The catalog gives every selected clip's frame count and size, so the epoch's batches are planned
from keys alone (data/buckets.py BatchPlan: deterministic, resumable, dealt by data-parallel rank)
and each clip is then read by key from its shard (ShardMembers: one seek, no tar scan), cut to its
bucket's duration and centre-cropped to its bucket's aspect ratio before the resize. A batch of
one bucket comes stacked ({"video": [B, 3, F, H, W]}, the contract of data/dataset.py's loader);
a packed row as a list of differently shaped videos. A clip that fails to decode is logged, left
out of its batch and counted in it (`SKIPPED`): the plan, and so the resumed order, never depends on
decoding.
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from functools import partial

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from megatron_video.config import ConfigError
from megatron_video.config.run import DataConfig
from megatron_video.data.buckets import BatchPlan, Bucket, assign_bucket, bucket_batches, parse_buckets
from megatron_video.data.catalog import SHARD_PATH, has_catalog, is_validation_key
from megatron_video.data.dataset import SKIPPED, caption_of, data_parallel_position
from megatron_video.data.decode import decode_window, to_model_video
from megatron_video.data.loader_workers import worker_options
from megatron_video.data.packing import token_packs
from megatron_video.data.selection import catalog_captions, selected_catalog
from megatron_video.data.shard_members import ShardMembers

log = logging.getLogger(__name__)


def crop_to_aspect(frames: np.ndarray, bucket: Bucket) -> np.ndarray:
    """The centred crop of uint8 [T, H, W, 3] with the bucket's aspect ratio (no stretching)."""
    h, w = frames.shape[1:3]
    if w * bucket.height > h * bucket.width:  # too wide
        keep = round(h * bucket.width / bucket.height)
        return frames[:, :, (w - keep) // 2:(w - keep) // 2 + keep]
    keep = round(w * bucket.height / bucket.width)
    return frames[:, (h - keep) // 2:(h - keep) // 2 + keep]


def bucketed_items(cfg: DataConfig, split: str) -> tuple[list[tuple[str, Bucket]], dict, dict]:
    """(key, bucket) of every selected clip of `split` that fits a bucket, with each key's catalog
    row (shard, frames) and the catalog's captions."""
    if not has_catalog(cfg.shards):
        raise ConfigError("data.buckets", f"needs the Parquet catalog of a curated output (clip sizes), "
                                          f"and {cfg.shards} has none")
    buckets = parse_buckets(cfg.buckets or [[cfg.frames, cfg.height, cfg.width]])
    frame = selected_catalog(cfg.shards, cfg.filter, cfg.version)
    items, rows, dropped = [], {}, 0
    for row in frame.itertuples(index=False):
        if is_validation_key(row.key, cfg.val_fraction) != (split == "val"):
            continue
        bucket = assign_bucket(int(row.num_frames), int(row.height), int(row.width), buckets)
        if bucket is None:
            dropped += 1
            continue
        items.append((row.key, bucket))
        rows[row.key] = (getattr(row, SHARD_PATH), int(row.num_frames))
    if dropped:
        log.warning("%d clips are shorter than every bucket of data.buckets: left out", dropped)
    return items, rows, catalog_captions(frame)


class BucketedClipDataset(IterableDataset):
    """Yields this rank's batches in BatchPlan order from position `skip_batches` on; worker w of
    W takes the plan's batches w, w + W, ... (the DataLoader's round-robin restores the order)."""

    def __init__(self, cfg: DataConfig, split: str, seed: int, tokens_of=None, skip_batches: int = 0,
                 repeat: bool = True):
        self.cfg, self.seed, self.skip_batches, self.repeat = cfg, seed, skip_batches, repeat
        items, self.rows, self.captions = bucketed_items(cfg, split)
        if cfg.packing:
            if tokens_of is None:
                raise ValueError("packing needs tokens_of(bucket): the tokens one sample of a bucket takes")
            batcher = partial(token_packs, tokens=tokens_of, budget=cfg.pack_tokens)
        else:
            batcher = partial(bucket_batches, batch_size=cfg.batch_size)
        dp_rank, dp_size = data_parallel_position()
        self.plan = BatchPlan(items, batcher, seed, dp_rank, dp_size)
        self.buckets = dict(items)
        self.members = ShardMembers()

    def _sample(self, key: str, epoch: int) -> dict | None:
        bucket = self.buckets[key]
        shard, num_frames = self.rows[key]
        generator = torch.Generator().manual_seed(
            (self.seed * 1_000_003 + epoch + int(hashlib.sha1(key.encode()).hexdigest()[:12], 16)) % 2**63)
        try:
            meta = json.loads(self.members.read(shard, f"{key}.json"))
            if key in self.captions:
                meta["caption"] = self.captions[key]
            frames = decode_window(self.members.read(shard, f"{key}.mp4"), num_frames, bucket.frames,
                                   self.cfg.frame_stride, generator)
        except (ValueError, OSError, KeyError) as err:  # av.error.* derive from OSError/ValueError
            log.warning("skipping clip %s: %s", key, err)
            return None
        return {"video": to_model_video(crop_to_aspect(frames, bucket), bucket.height, bucket.width),
                "caption": caption_of(meta), "key": key}

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        skipped = 0  # clips of this worker's batches that did not decode, since its last batch
        for index, (epoch, keys) in enumerate(self.plan.batches(self.skip_batches, self.repeat)):
            if index % workers != worker:
                continue
            samples = [s for s in (self._sample(key, epoch) for key in keys) if s is not None]
            skipped += len(keys) - len(samples)
            if not samples:
                continue
            videos = [s["video"] for s in samples]
            yield {"video": videos if self.cfg.packing else torch.stack(videos),
                   "caption": [s["caption"] for s in samples], "key": [s["key"] for s in samples], SKIPPED: skipped}
            skipped = 0


def build_bucketed_loader(cfg: DataConfig, seed: int, tokens_of=None, skip_batches: int = 0) -> DataLoader:
    """The training loader of data.buckets / data.packing; a resumed run passes the batches
    (microbatches) it already consumed as `skip_batches`."""
    dataset = BucketedClipDataset(cfg, "train", seed, tokens_of, skip_batches)
    return DataLoader(dataset, batch_size=None, **worker_options(cfg.num_workers))
