"""Which clips a run reads: the catalog with its feature sets, narrowed by `data.version` and `data.filter`.

`selected_catalog` is the one selection of the training loaders and of `mvideo view` (same parser,
same joined table, same rows); `select_clips` turns it into what a loader needs: the keys, the
shards that hold them (shards without a selected clip are never opened) and the captions that
feature sets provide. A loader keeps its own split (`is_validation_key`) and decode on top.
"""
from __future__ import annotations

import logging
import pathlib
from dataclasses import dataclass, field

import pandas as pd

from megatron_video.config import ConfigError
from megatron_video.config.run import DataConfig
from megatron_video.data.catalog import SHARD_PATH, apply_filter, has_catalog, load_catalog
from megatron_video.data.versions import keys_digest, load_version

log = logging.getLogger(__name__)


def selected_catalog(root: str | pathlib.Path, expression: str = "", version: str = "") -> pd.DataFrame:
    """The catalog rows that dataset version `version` (its feature sets and filter) and then the
    filter `expression` select; either may be empty. A bad version names data.version, a bad
    expression data.filter."""
    if not version:
        return load_catalog(root, expression)
    saved = load_version(root, version)
    frame = load_catalog(root, saved.filter, saved.features, key="data.version")
    if saved.keys_sha1 and keys_digest(frame["key"]) != saved.keys_sha1:
        log.warning("dataset version '%s' selected %d clips when saved and selects %d now: the catalog under "
                    "it changed", version, saved.clips, len(frame))
    return apply_filter(frame, expression) if expression else frame


def catalog_captions(frame: pd.DataFrame) -> dict[str, str]:
    """Captions a feature set provides (a `caption` column), by key; they win over the shard json's."""
    if "caption" not in frame.columns:
        return {}
    present = frame[frame["caption"].notna()]
    return dict(zip(present["key"], present["caption"].astype(str)))


@dataclass(frozen=True)
class ClipSelection:
    """keys/shards None: no catalog to select from, so every clip of every shard."""

    keys: frozenset[str] | None = None
    shards: frozenset[str] | None = None
    captions: dict[str, str] = field(default_factory=dict)

    def includes(self, key: str) -> bool:
        return self.keys is None or key in self.keys

    def reads_shard(self, path: str) -> bool:
        return self.shards is None or path in self.shards


def select_clips(cfg: DataConfig) -> ClipSelection:
    """The clips of `cfg.shards` a loader yields, before its train/validation split."""
    if not has_catalog(cfg.shards):
        for key, value in (("filter", cfg.filter), ("version", cfg.version)):
            if value:
                raise ConfigError(f"data.{key}", f"needs a Parquet catalog, and {cfg.shards} has none "
                                                 "(a curated output has catalog/)")
        return ClipSelection()
    frame = selected_catalog(cfg.shards, cfg.filter, cfg.version)
    if not len(frame):
        key = "data.filter" if cfg.filter else "data.version"
        raise ConfigError(key, f"selects none of the clips of {cfg.shards}")
    return ClipSelection(frozenset(frame["key"]), frozenset(frame[SHARD_PATH]), catalog_captions(frame))
