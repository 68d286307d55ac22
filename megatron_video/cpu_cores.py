"""The CPU cores this process may run on, and their split among the processes of a node.

Standard library only, at the bottom of the import graph: the library (training's thread count)
and the curator (its executors' thread pools and per-GPU core binding), which sits below the
library, both use it (tests/cluster/test_import_cycles.py pins that).
"""
from __future__ import annotations

import os


def available_cores() -> int:
    """The cores this process may run on: its CPU affinity where the OS has one (what `taskset` or
    `srun --cpus-per-task` bound it to, e.g. one process per GPU each on its share of the node),
    else every core of the machine."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def core_shares(cores: list[int], parts: int) -> list[list[int]]:
    """`cores` split into `parts` contiguous runs of equal length (the remainder left idle), as
    `srun --cpu-bind=cores` hands them to one process per GPU."""
    per = len(cores) // parts
    if per == 0:
        raise ValueError(f"{parts} parts need at least one core each; this process has {len(cores)}")
    return [cores[i * per:(i + 1) * per] for i in range(parts)]
