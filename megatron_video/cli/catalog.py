"""`mvideo catalog [list | add NAME FILE | describe NAME | version NAME filter=... features=[...]]`:
the feature sets and dataset versions of a curated output (`root=`, i.e. data.shards)."""
from __future__ import annotations

import pathlib

import pandas as pd

from megatron_video.config import ConfigError
from megatron_video.config.schema import RootConfig

DEFAULT_RECIPE = "demo"
POSITIONAL = ("catalog.action", "catalog.name", "catalog.file")
SHORTHANDS = {"root": "data.shards", "filter": "catalog.filter", "features": "catalog.features",
              "description": "catalog.description", "replace": "catalog.replace"}


def _read_table(path: str) -> pd.DataFrame:
    if not pathlib.Path(path).is_file():
        raise ConfigError("catalog.file", f"'{path}' does not exist")
    if path.endswith(".csv"):
        return pd.read_csv(path)
    if path.endswith(".parquet"):
        return pd.read_parquet(path)
    raise ConfigError("catalog.file", f"'{path}' is neither .parquet nor .csv")


def _column_lines(frame: pd.DataFrame, clips: int) -> list[str]:
    lines = []
    for column in frame.columns.drop("key", errors="ignore"):
        values = frame[column]
        line = f"  {column:<24} {values.dtype!s:<10} {int(values.notna().sum())}/{clips} clips"
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values) and values.notna().any():
            line += f"  min {values.min():.4g}  mean {values.mean():.4g}  max {values.max():.4g}"
        lines.append(line)
    return lines


def _list(root: str) -> None:
    from megatron_video.data.catalog import feature_set_files, read_feature_set, shard_index
    from megatron_video.data.versions import list_versions

    index = shard_index(root)
    print(f"{root}: {len(index)} clips in {index['shard_path'].nunique() if len(index) else 0} shards; "
          f"shard index columns: {', '.join(c for c in index.columns if c != 'shard_path')}")
    print("feature sets:" if feature_set_files(root) else "feature sets: none")
    for name, files in feature_set_files(root).items():
        frame = read_feature_set(root, name, files)
        covered = int(frame["key"].isin(set(index["key"])).sum())
        print(f"  {name:<20} {covered}/{len(index)} clips  columns: {', '.join(frame.columns.drop('key'))}"
              f"  ({len(files)} file{'s' if len(files) > 1 else ''})")
    versions = list_versions(root)
    print("dataset versions:" if versions else "dataset versions: none")
    for version in versions:
        print(f"  {version.name:<20} {version.clips} clips when saved  filter: {version.filter or '(none)'}  "
              f"features: {', '.join(version.features) or '(none)'}")


def _describe(root: str, name: str) -> None:
    from megatron_video.data.catalog import feature_set_files, read_feature_set, shard_index
    from megatron_video.data.selection import selected_catalog
    from megatron_video.data.versions import load_version, versions_dir

    clips = len(shard_index(root))
    if name in feature_set_files(root):
        frame = read_feature_set(root, name)
        print(f"feature set '{name}': {len(frame)} rows; files: "
              f"{', '.join(map(str, feature_set_files(root)[name]))}")
        print("\n".join(_column_lines(frame, clips)))
    elif (versions_dir(root) / f"{name}.json").is_file():
        version = load_version(root, name)
        now = len(selected_catalog(root, "", name))
        print(f"dataset version '{name}': {version.description}\n  filter: {version.filter or '(none)'}\n"
              f"  features: {', '.join(version.features) or '(none)'}\n"
              f"  clips: {version.clips} when saved, {now} now (of {clips})")
    else:
        raise ConfigError("catalog.name", f"'{name}' is neither a feature set nor a dataset version of {root}")


def run(cfg: RootConfig) -> int:
    from megatron_video.data.catalog import add_feature_set
    from megatron_video.data.versions import save_version

    root, action = cfg.data.shards, cfg.catalog
    if not pathlib.Path(root).is_dir():
        raise ConfigError("data.shards", f"'{root}' is not a curated output dir")
    if action.action == "list":
        _list(root)
    elif action.action == "describe":
        _describe(root, action.name)
    elif action.action == "add":
        path = add_feature_set(root, action.name, _read_table(action.file), action.replace)
        print(f"added feature set '{action.name}' as {path} (no shard was rewritten)")
        _describe(root, action.name)
    else:
        version = save_version(root, action.name, action.filter, list(action.features) or None,
                               action.description, action.replace)
        print(f"saved dataset version '{version.name}': {version.clips} clips; train on it with "
              f"data.version={version.name}")
    return 0
