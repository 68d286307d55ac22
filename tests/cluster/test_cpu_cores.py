"""The cores a process may run on follow its CPU affinity, and a node's cores split into equal runs."""
import os

import pytest

from megatron_video.cpu_cores import available_cores, core_shares


def test_the_available_cores_are_those_the_process_is_bound_to(monkeypatch):
    """One process per GPU, bound to its share of the node (`srun --cpu-bind`), counts its share only."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert available_cores() == 8


def test_core_shares_are_equal_contiguous_runs():
    """One process (or Ray actor) per GPU gets its run of cores, as `srun --cpu-bind=cores` gives them."""
    assert core_shares(list(range(8)), 2) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert core_shares([2, 3, 5, 7, 11], 2) == [[2, 3], [5, 7]]  # the odd core out stays idle
    with pytest.raises(ValueError, match="at least one core each"):
        core_shares([0], 2)
