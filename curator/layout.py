"""A curated output split in parts: one complete output (shards, catalog, ledger) per process of a
partitioned run (`curate.part_index` of `curate.part_count`), side by side under the output dir."""
from __future__ import annotations

import pathlib


def part_dir(output: str | pathlib.Path, index: int, count: int) -> pathlib.Path:
    return pathlib.Path(output) / f"part-{index:05d}-of-{count:05d}"


def part_share(listing: list, index: int, count: int) -> list:
    """What part `index` of `count` curates of the run's sorted input listing: every count-th input,
    so the parts never overlap, together cover it, and each process computes its share alone."""
    return listing[index::count]


def curated_dirs(root: str | pathlib.Path) -> list[pathlib.Path]:
    """The output dirs under a curated output: the root itself, then its parts in order."""
    root = pathlib.Path(root)
    return [root, *sorted(p for p in root.glob("part-*-of-*") if p.is_dir())]
