"""Fixtures of the cluster tests (loaded by pytest; test files never import it)."""
from __future__ import annotations

import pytest
import torch

from megatron_video.parallel.state import ParallelConfig, init_distributed


@pytest.fixture(scope="session")
def megatron_cpu():
    """A one-rank gloo group with megatron's parallel_state, for building models in the planner tests."""
    init_distributed(ParallelConfig(), torch.device("cpu"), seed=0)
