"""Fixtures of the kernel tests. Without a GPU the kernels run under TRITON_INTERPRET=1, which
tests/conftest.py sets before triton is first imported (spawned distributed ranks inherit it)."""
import random

import pytest
import torch


@pytest.fixture
def seed() -> int:
    """A fresh seed each run (fresh random inputs), printed in every failure message that uses it."""
    return random.SystemRandom().randrange(2 ** 31)


@pytest.fixture
def poisoned_outputs(monkeypatch):
    """torch.empty / empty_like return NaN-filled tensors: an output element a kernel fails to write
    shows up as NaN."""
    empty, empty_like = torch.empty, torch.empty_like

    def poison(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.fill_(float("nan")) if tensor.is_floating_point() else tensor

    monkeypatch.setattr(torch, "empty", lambda *args, **kwargs: poison(empty(*args, **kwargs)))
    monkeypatch.setattr(torch, "empty_like", lambda *args, **kwargs: poison(empty_like(*args, **kwargs)))
