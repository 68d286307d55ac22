"""Shared fixtures and helpers for the model tests (loaded by pytest; test files never import it)."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture
def tiny_inputs():
    """Inputs builder: (x, t, text, mask) for a config, with the last text tokens padded out."""

    def make(cfg, batch=2, latent=(2, 4, 6), text_len=5, seed=0, padded=2):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(batch, cfg.in_channels, *latent, generator=g)
        t = torch.rand(batch, generator=g)
        text = torch.randn(batch, text_len, cfg.text_dim, generator=g)
        mask = torch.ones(batch, text_len, dtype=torch.bool)
        if padded:
            mask[0, text_len - padded:] = False
        return x, t, text, mask

    return make
