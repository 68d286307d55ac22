import pytest
import torch

from megatron_video.parallel.state import ParallelConfig, init_distributed


@pytest.fixture(scope="session")
def megatron_single():
    """A one-rank gloo group with megatron's parallel_state, for single-process model tests."""
    init_distributed(ParallelConfig(), torch.device("cpu"), seed=1234)
