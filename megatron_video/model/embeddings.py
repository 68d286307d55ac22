"""Conditioning inputs: timestep features and MLP, text projection, AdaLN modulation MLPs.

These layers are small and replicated on every tensor-parallel rank (plain torch modules).
"""
from __future__ import annotations

import math

import torch
from torch import nn


def timestep_features(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features [B, dim] of t in [0, 1] (scaled by 1000, the range DiTs were tuned on)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = (t.float() * 1000.0)[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def position_features(positions: torch.Tensor, width: int, w_min: float, w_max: float) -> torch.Tensor:
    """Sin/cos features [N, width] of normalised (t, h, w) positions [N, 3]: width // 6 frequencies
    log-spaced in [w_min, w_max] radians per unit per axis, a sin and a cos of each; zeros fill the
    remaining width % 6 channels."""
    k = width // 6
    freqs = torch.logspace(math.log10(w_min), math.log10(w_max), k, dtype=torch.float64, device=positions.device)
    angles = positions.to(torch.float64)[:, :, None] * freqs  # [N, 3, k]
    features = torch.cat([angles.sin(), angles.cos()], dim=-1).reshape(positions.shape[0], 6 * k)
    return nn.functional.pad(features, (0, width - 6 * k)).float()


class TimestepEmbedding(nn.Module):
    """t -> sinusoidal features -> MLP -> conditioning vector [B, hidden]."""

    def __init__(self, feature_dim: int, hidden: int):
        super().__init__()
        self.feature_dim = feature_dim
        self.mlp = nn.Sequential(nn.Linear(feature_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        features = timestep_features(t, self.feature_dim).to(self.mlp[0].weight.dtype)
        return self.mlp(features)


class TextProjection(nn.Module):
    """Text encoder states [B, L, text_dim] -> tokens of the joint sequence [B, L, hidden]."""

    def __init__(self, text_dim: int, hidden: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(text_dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, hidden))

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        return self.mlp(text)


class PooledTextEmbedding(nn.Module):
    """Text encoder states [B, L, text_dim] and mask [B, L] -> a conditioning vector [B, hidden]: the
    masked mean over the real tokens through an MLP. Added to the timestep embedding that drives
    every AdaLN modulation (as SD3 and Flux add their pooled text embedding), it gives the caption a
    path to the whole video that does not wait for the blocks to learn to attend to the text tokens.
    """

    def __init__(self, text_dim: int, hidden: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(text_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        weights = text_mask.to(self.mlp[0].weight.dtype)[..., None]
        # An all-padding prompt pools to zeros rather than dividing by zero.
        pooled = (text.to(weights.dtype) * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        return self.mlp(pooled)


def modulation_mlp(hidden: int, inner: int, outputs: int) -> nn.Sequential:
    """Conditioning -> `outputs` modulation vectors [B, outputs * hidden].

    Index 2 is the output Linear, zero-initialised so a fresh block is the identity; the optimizer
    finds it (and leaves it unconstrained) by the name pattern `modulation.2`.
    """
    mlp = nn.Sequential(nn.Linear(hidden, inner), nn.SiLU(), nn.Linear(inner, outputs * hidden))
    nn.init.zeros_(mlp[2].weight)
    nn.init.zeros_(mlp[2].bias)
    return mlp
