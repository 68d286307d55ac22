"""Buckets of (frames, height, width): mixed durations, resolutions and images (1-frame videos).

Each clip trains at one bucket's size (`assign_bucket`), and the batches of an epoch are drawn
from one bucket each (`data.buckets`), or packed across buckets to a token budget
(`data.packing`, data/packing.py). `BatchPlan` fixes the order: a pure function of (seed, epoch)
over the selected clips, sorted by key first so the catalog's row order does not matter, dealt
round-robin to the data-parallel ranks (tensor, context and pipeline ranks of one replica get the
same batches) with every rank given the same number of batches, so ranks step together. A resumed
run starts at the number of batches this rank has consumed and continues exactly where it stopped.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from megatron_video.config import ConfigError


@dataclass(frozen=True, order=True)
class Bucket:
    """A training size in pixels: frames x height x width (frames = 1: an image)."""

    frames: int
    height: int
    width: int

    @property
    def aspect(self) -> float:
        return self.width / self.height

    def __str__(self) -> str:
        return f"{self.frames}x{self.height}x{self.width}"


def parse_buckets(entries: Sequence, key: str = "data.buckets") -> tuple[Bucket, ...]:
    """Buckets from config entries: [frames, height, width] lists or "FxHxW" strings."""
    buckets = []
    for entry in entries:
        parts = str(entry).lower().split("x") if isinstance(entry, str) else list(entry)
        try:
            bucket = Bucket(*(int(p) for p in parts))
        except (TypeError, ValueError) as err:
            raise ConfigError(key, f"entry {entry!r} is not [frames, height, width] or 'FxHxW'") from err
        if min(bucket.frames, bucket.height, bucket.width) < 1:
            raise ConfigError(key, f"entry {entry!r} must be positive")
        buckets.append(bucket)
    if len(set(buckets)) != len(buckets):
        raise ConfigError(key, "lists a bucket twice")
    return tuple(sorted(buckets))


def assign_bucket(frames: int, height: int, width: int, buckets: Sequence[Bucket]) -> Bucket | None:
    """The bucket a clip of `frames` frames at height x width trains in: among those it has enough
    frames for (an image fits 1-frame buckets only), the nearest aspect ratio, then the longest,
    then the largest not above the clip's pixels (then the smallest); None when no bucket fits."""
    fits = [b for b in buckets if b.frames <= frames]
    if not fits:
        return None
    pixels = height * width

    def rank(b: Bucket):
        larger = b.height * b.width > pixels
        return (round(abs(math.log(b.aspect * height / width)), 9), -b.frames, larger,
                (b.height * b.width) * (1 if larger else -1))

    return min(fits, key=rank)


def latent_tokens(bucket: Bucket, spatial: int, temporal: int, patch: Sequence[int]) -> int:
    """Video tokens of a bucket: a codec that folds `temporal` frames keeps the first frame alone
    (Wan's causal VAE: 1 + (T - 1) / temporal latent frames), then the patch grid."""
    frames = bucket.frames if temporal == 1 else 1 + (bucket.frames - 1) // temporal
    return (frames // patch[0]) * (bucket.height // spatial // patch[1]) * (bucket.width // spatial // patch[2])


def bucket_batches(items: list[tuple[str, Bucket]], generator: torch.Generator, batch_size: int) -> list[list[str]]:
    """Batches of `batch_size` samples of one bucket each (the remainder of a bucket waits for the
    next epoch's shuffle), in a shuffled order across buckets."""
    by_bucket: dict[Bucket, list[str]] = {}
    for key, bucket in items:
        by_bucket.setdefault(bucket, []).append(key)
    batches = []
    for bucket in sorted(by_bucket):
        keys = by_bucket[bucket]
        keys = [keys[i] for i in torch.randperm(len(keys), generator=generator).tolist()]
        batches += [keys[i:i + batch_size] for i in range(0, len(keys) - batch_size + 1, batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


@dataclass
class BatchPlan:
    """Which keys form each batch of each epoch, for one data-parallel rank.

    `batcher(items, generator)` turns the epoch's (key, bucket) items into batches of keys
    (bucket_batches, or packing.token_packs for packed rows).
    """

    items: list[tuple[str, Bucket]]
    batcher: Callable[[list[tuple[str, Bucket]], torch.Generator], list[list[str]]]
    seed: int
    dp_rank: int = 0
    dp_size: int = 1

    def __post_init__(self) -> None:
        self.items = sorted(self.items)
        self._epochs: dict[int, list[list[str]]] = {}

    def epoch(self, epoch: int) -> list[list[str]]:
        """This rank's batches of `epoch`: every dp_size-th of the epoch's batches, starting at its
        rank, over the largest multiple of dp_size of them."""
        if epoch not in self._epochs:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            batches = self.batcher(self.items, generator)
            usable = len(batches) - len(batches) % self.dp_size
            self._epochs = {epoch: batches[self.dp_rank:usable:self.dp_size]}  # keep one epoch in memory
        return self._epochs[epoch]

    def batches(self, start: int = 0, repeat: bool = True) -> Iterator[tuple[int, list[str]]]:
        """(epoch, keys) of this rank's batches from position `start` (batches already consumed)."""
        epoch = 0
        while True:
            batches = self.epoch(epoch)
            if not batches:
                raise ConfigError("data.buckets", f"rank {self.dp_rank} of {self.dp_size} gets no batch from "
                                                  f"{len(self.items)} clips: add clips or lower the batch size")
            if start >= len(batches):
                start -= len(batches)
            else:
                for keys in batches[start:]:
                    yield epoch, keys
                start = 0
                if not repeat:
                    return
            epoch += 1
