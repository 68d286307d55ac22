"""Named dataset versions: a filter expression and the feature sets it reads, saved beside the catalog.

`mvideo catalog version NAME filter='aesthetic_score > 0.5' features=[aesthetic]` writes
`<curated root>/catalog/versions/NAME.json`; a training recipe then names it with
`data.version=NAME`. The file also records how many clips the version selected when it was saved
and a digest of their keys, so a later run can tell whether the data under the name has changed
(more shards curated, a feature set replaced) and say so.
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import time
from dataclasses import asdict, dataclass, field

from megatron_video.config import ConfigError
from megatron_video.data.catalog import FEATURE_NAME, catalog_dir, feature_set_files, load_catalog


@dataclass
class DatasetVersion:
    name: str
    filter: str = ""
    features: list[str] = field(default_factory=list)  # the feature sets joined before the filter
    description: str = ""
    created: float = 0.0
    clips: int = 0
    keys_sha1: str = ""


def versions_dir(root: str | pathlib.Path) -> pathlib.Path:
    return catalog_dir(root) / "versions"


def keys_digest(keys) -> str:
    return hashlib.sha1("\n".join(sorted(keys)).encode()).hexdigest()


def list_versions(root: str | pathlib.Path) -> list[DatasetVersion]:
    return [load_version(root, path.stem) for path in sorted(versions_dir(root).glob("*.json"))]


def load_version(root: str | pathlib.Path, name: str) -> DatasetVersion:
    path = versions_dir(root) / f"{name}.json"
    if not path.is_file():
        known = ", ".join(p.stem for p in sorted(versions_dir(root).glob("*.json"))) or "none"
        raise ConfigError("data.version", f"no dataset version '{name}' under {root}; versions: {known}")
    return DatasetVersion(**json.loads(path.read_text()))


def save_version(root: str | pathlib.Path, name: str, expression: str, features: list[str] | None,
                 description: str = "", replace: bool = False) -> DatasetVersion:
    """Check the version against the catalog (its feature sets exist, its filter applies, it selects
    clips), then write it. `features` None: every feature set there now (a set added later joins
    only a version saved after it)."""
    if not FEATURE_NAME.match(name):
        raise ConfigError("catalog.name", f"'{name}' is not a version name (letters, digits, _ . -)")
    path = versions_dir(root) / f"{name}.json"
    if path.exists() and not replace:
        raise ConfigError("catalog.name", f"dataset version '{name}' exists; pass catalog.replace=true to replace it")
    known = feature_set_files(root)
    features = list(known) if features is None else features
    for feature in features:
        if feature not in known:
            raise ConfigError("catalog.features", f"no feature set '{feature}'; feature sets: "
                                                  f"{', '.join(known) or 'none'}")
    selected = load_catalog(root, expression, features, key="catalog.filter")
    if not len(selected):
        raise ConfigError("catalog.filter", f"'{expression}' selects no clip of {root}")
    version = DatasetVersion(name, expression, features, description, time.time(), len(selected),
                             keys_digest(selected["key"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(asdict(version), indent=2) + "\n")
    os.replace(temporary, path)
    return version
