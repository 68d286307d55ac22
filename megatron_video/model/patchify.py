"""3D patchify / unpatchify between latents [B, C, T, H, W] and token rows [B, N, C*pt*ph*pw].

Tokens are ordered (t, h, w) row-major, the order the RoPE positions assume.
"""
from __future__ import annotations

import torch


def patch_grid(latent_shape: tuple[int, int, int], patch: list[int]) -> tuple[int, int, int]:
    """Token grid (T', H', W') of a latent (T, H, W); each side must divide by its patch."""
    grid = []
    for size, p, axis in zip(latent_shape, patch, "THW"):
        if size % p:
            raise ValueError(f"latent {axis}={size} is not divisible by patch {p}")
        grid.append(size // p)
    return tuple(grid)


def patchify(x: torch.Tensor, patch: list[int]) -> torch.Tensor:
    b, c, t, h, w = x.shape
    pt, ph, pw = patch
    gt, gh, gw = patch_grid((t, h, w), patch)
    x = x.reshape(b, c, gt, pt, gh, ph, gw, pw)
    x = x.permute(0, 2, 4, 6, 1, 3, 5, 7)  # b, gt, gh, gw, c, pt, ph, pw
    return x.reshape(b, gt * gh * gw, c * pt * ph * pw)


def unpatchify(tokens: torch.Tensor, patch: list[int], grid: tuple[int, int, int], channels: int) -> torch.Tensor:
    b = tokens.shape[0]
    pt, ph, pw = patch
    gt, gh, gw = grid
    x = tokens.reshape(b, gt, gh, gw, channels, pt, ph, pw)
    x = x.permute(0, 4, 1, 5, 2, 6, 3, 7)  # b, c, gt, pt, gh, ph, gw, pw
    return x.reshape(b, channels, gt * pt, gh * ph, gw * pw)
