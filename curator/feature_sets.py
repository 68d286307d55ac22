"""Catalog feature sets written by post-curation passes: `<root>/catalog/features/<name>.parquet`,
a `key` column plus columns prefixed with the pass's name, so the catalog joins them by clip key.
A file is written under a temporary name and renamed into place: readers never see half of one."""
from __future__ import annotations

import os
import pathlib

import pandas as pd


def feature_set_path(root: str | pathlib.Path, name: str) -> pathlib.Path:
    return pathlib.Path(root) / "catalog" / "features" / f"{name}.parquet"


def write_feature_set(root: str | pathlib.Path, name: str, frame: pd.DataFrame) -> pathlib.Path:
    if "key" not in frame.columns or frame["key"].duplicated().any():
        raise ValueError(f"feature set '{name}' needs a `key` column with each clip once")
    path = feature_set_path(root, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    frame.to_parquet(temporary, index=False)
    os.replace(temporary, path)
    return path


def read_feature_set(root: str | pathlib.Path, name: str) -> pd.DataFrame:
    path = feature_set_path(root, name)
    if not path.is_file():
        raise FileNotFoundError(f"no feature set '{name}' at {path}")
    return pd.read_parquet(path)
