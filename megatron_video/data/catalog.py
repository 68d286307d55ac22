"""The dataset catalog: the shard index written by curation, plus feature sets joined by clip key.

On-disk layout of a curated output (`data.shards`; a partitioned run repeats it in each
`part-XXXXX-of-YYYYY/`, and every part is read):

    shards/shard-NNNNNN.tar            the clips, <key>.mp4 + <key>.json; written once, never rewritten
    catalog/shard-NNNNNN.parquet       the shard index: one row per clip (key, shard, source, frames, ...)
    catalog/features/<name>.parquet    a feature set: a `key` column and its own feature columns
    catalog/features/<name>/*.parquet  the same feature set written in several files (all are read)
    catalog/versions/<name>.json       a named dataset version (megatron_video/data/versions.py)
    ledger.sqlite                      every input's outcome (curator/ledger.py)

A feature set adds columns without touching a shard: scores, captions, embeddings' cluster ids,
anything computed after curation. Writers follow three rules: (1) `key` holds the clip keys of the
shard index, each at most once per feature set; (2) a column name belongs to one table only, so
no feature column repeats a shard-index column or another feature set's column (prefix it, e.g.
`aesthetic_score`); (3) write the file under a temporary name and rename it into place (as
`add_feature_set` does), so a reader never sees half a file. Clips a feature set does not cover
get no value (null) in its columns; filters treat a missing value as matching no comparison.

`load_catalog` joins the feature sets onto the shard index (a left join by key) and applies a
filter expression of megatron_video/data/filters.py; the training loader, dataset versions and
`mvideo view` all select clips through it.
"""
from __future__ import annotations

import hashlib
import os
import pathlib
import re

import pandas as pd

from curator.layout import curated_dirs
from megatron_video.config import ConfigError
from megatron_video.data.filters import FilterError, evaluate_filter

FEATURE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
SHARD_PATH = "shard_path"  # added on reading: the shard file that holds the clip


def catalog_dir(root: str | pathlib.Path) -> pathlib.Path:
    return pathlib.Path(root) / "catalog"


def features_dir(root: str | pathlib.Path) -> pathlib.Path:
    return catalog_dir(root) / "features"


def has_catalog(root: str | pathlib.Path) -> bool:
    return any(next(catalog_dir(d).glob("*.parquet"), None) for d in curated_dirs(root))


def shard_index(root: str | pathlib.Path) -> pd.DataFrame:
    """The shard writer's rows of every part, with the path of each clip's shard added."""
    frames = []
    for folder in curated_dirs(root):
        for path in sorted(catalog_dir(folder).glob("*.parquet")):
            frame = pd.read_parquet(path)
            frame[SHARD_PATH] = [str(folder / "shards" / name) for name in frame["shard"]]
            frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["key", SHARD_PATH])


def feature_set_files(root: str | pathlib.Path) -> dict[str, list[pathlib.Path]]:
    """Each feature set's Parquet files, over the root and its parts, by feature set name."""
    found: dict[str, list[pathlib.Path]] = {}
    for folder in curated_dirs(root):
        base = features_dir(folder)
        for path in sorted(base.glob("*.parquet")):
            found.setdefault(path.stem, []).append(path)
        for sub in sorted(p for p in base.glob("*") if p.is_dir()):
            found.setdefault(sub.name, []).extend(sorted(sub.glob("*.parquet")))
    return {name: files for name, files in sorted(found.items()) if files}


def read_feature_set(root: str | pathlib.Path, name: str, files: list[pathlib.Path] | None = None) -> pd.DataFrame:
    files = feature_set_files(root).get(name, []) if files is None else files
    if not files:
        known = ", ".join(feature_set_files(root)) or "none"
        raise ConfigError("data.features", f"no feature set '{name}' under {root}; feature sets: {known}")
    frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    _check_feature_frame(frame, name)
    return frame


def _check_feature_frame(frame: pd.DataFrame, name: str) -> None:
    if "key" not in frame.columns:
        raise ConfigError("data.features", f"feature set '{name}' has no 'key' column (columns: "
                                           f"{', '.join(map(str, frame.columns))})")
    repeated = frame["key"][frame["key"].duplicated()]
    if len(repeated):
        raise ConfigError("data.features", f"feature set '{name}' holds key '{repeated.iloc[0]}' more than "
                                           f"once ({len(repeated)} repeated keys)")


def _join(index: pd.DataFrame, features: dict[str, pd.DataFrame]) -> pd.DataFrame:
    owners = {column: "the shard index" for column in index.columns}
    joined = index
    for name, frame in features.items():
        for column in frame.columns.drop("key"):
            if column in owners:
                raise ConfigError("data.features", f"column '{column}' of feature set '{name}' is already a "
                                                   f"column of {owners[column]}: rename it")
            owners[column] = f"feature set '{name}'"
        joined = joined.merge(frame, on="key", how="left", validate="one_to_one")
    return joined


def apply_filter(frame: pd.DataFrame, expression: str, key: str = "data.filter") -> pd.DataFrame:
    """The rows the filter expression selects; a bad expression is a ConfigError under `key`."""
    try:
        return frame[evaluate_filter(frame, expression)]
    except FilterError as err:
        raise ConfigError(key, f"cannot apply '{expression}': {err}") from None


def load_catalog(root: str | pathlib.Path, expression: str = "", features: list[str] | None = None,
                 key: str = "data.filter") -> pd.DataFrame:
    """The shard index with feature sets joined by key (all of them, or those named), filtered."""
    names = list(feature_set_files(root)) if features is None else features
    files = feature_set_files(root)
    joined = _join(shard_index(root), {name: read_feature_set(root, name, files.get(name, [])) for name in names})
    return apply_filter(joined, expression, key) if expression else joined


def add_feature_set(root: str | pathlib.Path, name: str, frame: pd.DataFrame, replace: bool = False) -> pathlib.Path:
    """Write `frame` (a `key` column + feature columns) as feature set `name` of the catalog at root.

    Checked first: the name, the key column, unique keys, keys that exist in the shard index and
    column names that no other table owns. The shards are never opened, let alone rewritten.
    """
    if not FEATURE_NAME.match(name):
        raise ConfigError("catalog.name", f"'{name}' is not a feature set name (letters, digits, _ . -)")
    path = features_dir(root) / f"{name}.parquet"
    existing = feature_set_files(root)
    if name in existing and not replace:
        raise ConfigError("catalog.name", f"feature set '{name}' exists; pass catalog.replace=true to replace it")
    if name in existing and existing[name] != [path]:
        raise ConfigError("catalog.name", f"feature set '{name}' is written in several files by its producer "
                                          f"({existing[name][0].parent}): replace them there")
    _check_feature_frame(frame, name)
    index = shard_index(root)
    if not len(index):
        raise ConfigError("data.shards", f"no catalog under {root}: curate into it first")
    known = set(index["key"])
    covered = int(frame["key"].isin(known).sum())
    if covered == 0:
        raise ConfigError("catalog.file", f"none of the {len(frame)} keys of feature set '{name}' is a clip "
                                          f"of {root} (first: '{frame['key'].iloc[0] if len(frame) else ''}')")
    others = {n: read_feature_set(root, n, files) for n, files in existing.items() if n != name}
    _join(index, {**others, name: frame.iloc[:0]})  # refuses a column another table owns
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    frame.to_parquet(temporary, index=False)
    os.replace(temporary, path)
    return path


def is_validation_key(key: str, val_fraction: float) -> bool:
    """A stable split by key hash, so a clip is in the same split on every rank and every run."""
    digest = int(hashlib.sha1(key.encode()).hexdigest()[:8], 16)
    return digest / 0xFFFFFFFF < val_fraction
