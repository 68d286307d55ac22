"""Triton kernels run under the interpreter on CPU. TRITON_INTERPRET is read when a kernel is
decorated, so it is set here, before any test imports kernels/ (product code imports them lazily);
spawned distributed ranks inherit it."""
import os
import random

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture
def seed() -> int:
    """A fresh seed each run (fresh random inputs), printed in every failure message that uses it."""
    return random.SystemRandom().randrange(2 ** 31)
