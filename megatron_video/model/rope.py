"""ND-RoPE: rotary embedding whose frequency bands point along spread-out 3D directions.

Axial 3D RoPE splits the bands between t, h and w, so no band sees a diagonal. Here band j rotates
by angle w_j * <u_j, p>: u_j is a unit axis from a Fibonacci (golden-spiral) point set on the sphere,
turned by a random rotation seeded per layer (layers see different directions), and w_j is
log-spaced in [w_min, w_max]. The lowest `zero_fraction` of bands get w_j = 0 (partial RoPE: those
channels stay position-free). The angle is linear in p, so q.k depends on positions only through
their difference.

Positions are normalised: p = (t, h, w) index / longest grid side, so one frequency range serves
every resolution. Text tokens sit at p = 0, i.e. they are never rotated.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from kernels.reference import rope_rotate

GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))


def fibonacci_sphere(n: int) -> torch.Tensor:
    """n nearly uniformly spread unit vectors [n, 3] (a low-discrepancy golden-spiral set)."""
    j = torch.arange(n, dtype=torch.float64, device="cpu")
    z = 1.0 - (2.0 * j + 1.0) / n
    r = torch.sqrt(1.0 - z * z)
    phi = j * GOLDEN_ANGLE
    return torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], dim=-1)


def random_rotation(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64, device="cpu"))
    q = q * torch.sign(torch.diagonal(r))  # Haar-uniform
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def band_frequencies(bands: int, w_min: float, w_max: float, zero_fraction: float) -> torch.Tensor:
    zero = round(zero_fraction * bands)
    active = bands - zero
    w = torch.zeros(bands, dtype=torch.float64, device="cpu")
    if active == 1:
        w[zero:] = w_min
    elif active > 1:
        w[zero:] = torch.logspace(math.log10(w_min), math.log10(w_max), active, dtype=torch.float64, device="cpu")
    return w


def video_positions(grid: tuple[int, int, int], device: torch.device | None = None) -> torch.Tensor:
    """Normalised (t, h, w) positions [N, 3] of a token grid in patchify's order."""
    axes = [torch.arange(n, dtype=torch.float64, device=device) for n in grid]
    pos = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)
    return pos / max(grid)


class NDRope(nn.Module):
    """The rotation of one layer: cos/sin tables from positions, applied to [..., S, head_dim]."""

    def __init__(self, head_dim: int, w_min: float, w_max: float, zero_fraction: float, seed: int):
        super().__init__()
        bands = head_dim // 2
        # Built on the CPU even under a meta/cuda default device (counting parameters, then .to(device)).
        g = torch.Generator().manual_seed(seed)
        axes = fibonacci_sphere(bands)[torch.randperm(bands, generator=g, device="cpu")] @ random_rotation(seed).T
        freq = band_frequencies(bands, w_min, w_max, zero_fraction)
        # Plain float64 attributes, not buffers: derived from the config (nothing to checkpoint), and
        # model.to(bfloat16) must not round them (angles reach ~100 rad).
        self.axes, self.freq = axes, freq

    def angles(self, positions: torch.Tensor) -> torch.Tensor:
        """Angles [S, bands] for positions [S, 3] (float64 product, then float32)."""
        axes, freq = self.axes.to(positions.device), self.freq.to(positions.device)
        return ((positions.double() @ axes.T) * freq).float()

    @staticmethod
    def rotate(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
        """Rotate channel pairs (i, i + d/2) of x [..., S, d] by angles [S, d/2]."""
        return rope_rotate(x, angles)
