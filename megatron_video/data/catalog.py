"""The Parquet catalog written by curation: one row per clip, joined by `key`, filterable."""
from __future__ import annotations

import hashlib
import pathlib

import pandas as pd

from curator.layout import curated_dirs
from megatron_video.config import ConfigError


def catalog_dir(root: pathlib.Path) -> pathlib.Path:
    return root / "catalog"


def load_catalog(root: str | pathlib.Path, query: str = "") -> pd.DataFrame:
    """All catalog rows under a curated output dir (and each part's of a partitioned run),
    optionally filtered by a pandas query."""
    files = [f for d in curated_dirs(root) for f in sorted(catalog_dir(d).glob("*.parquet"))]
    if not files:
        return pd.DataFrame()
    frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    if query:
        try:
            frame = frame.query(query)
        except Exception as err:  # noqa: BLE001  (pandas raises many types for a bad expression)
            raise ConfigError("data.filter", f"cannot apply '{query}': {err}") from None
    return frame


def is_validation_key(key: str, val_fraction: float) -> bool:
    """A stable split by key hash, so a clip is in the same split on every rank and every run."""
    digest = int(hashlib.sha1(key.encode()).hexdigest()[:8], 16)
    return digest / 0xFFFFFFFF < val_fraction
