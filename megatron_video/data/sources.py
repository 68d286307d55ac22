"""Where the trainer's batches come from (`data.source`): clips decoded and encoded in the trainer,
latent shards written by `mvideo encode`, or Ray workers that encode remotely (docs/latents.md).

Every source keeps the clip loader's order, split, data-parallel sharding and resume skipping; the
latent sources bring "latents", "text" and "mask" in place of "video" (training.objective.condition_batch).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

from megatron_video.config import ConfigError
from megatron_video.config.schema import RootConfig
from megatron_video.data.dataset import build_loader, list_shards
from megatron_video.data.loaders import build_train_loader
from megatron_video.data.selection import select_clips


def check_source(cfg: RootConfig) -> frozenset[str] | None:
    """Check the data source before any model is built; the keys it selects (None: every clip)."""
    if cfg.data.source == "latents":
        from megatron_video.data.latent_shards import LatentStore

        return LatentStore(cfg.data.latents).check(cfg).keys
    if not cfg.data.shards:
        raise ConfigError("data.shards", "is required: a curated output dir or a dir of shards")
    list_shards(cfg.data.shards)
    return select_clips(cfg.data).keys


def open_train_loader(cfg: RootConfig, device: torch.device, skip_batches: int, state: dict | None) -> Iterator[dict]:
    """Endless training batches. Clips come through `data.loader` (DALI or the CPU loader; `state` is
    a DALI loader's checkpointed position), latent and remote sources as open_loader gives them."""
    if cfg.data.source == "clips":
        return build_train_loader(cfg.data, device, cfg.run.seed, skip_batches, state)
    return iter(open_loader(cfg, "train", cfg.run.seed, repeat=True, skip_batches=skip_batches))


def open_loader(cfg: RootConfig, split: str, seed: int, repeat: bool, skip_batches: int = 0) -> Iterable[dict]:
    """Batches of `split`; a resumed run passes the batches it already consumed as `skip_batches`.
    Validation under data.source=remote encodes in the trainer: its few fixed batches do not justify
    a second pool of workers."""
    if cfg.data.source == "latents":
        from megatron_video.data.latent_shards import build_latent_loader

        return build_latent_loader(cfg, split, seed, repeat, skip_batches)
    if cfg.data.source == "remote" and split == "train":
        from megatron_video.data.remote_encoding import RemoteEncodedLoader

        return RemoteEncodedLoader(cfg, split, seed, repeat, skip_batches)
    return build_loader(cfg.data, split, seed, repeat, skip_batches)
