"""The LatentCodec protocol every codec (pixel, Wan VAE) satisfies, and channel normalisation."""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class LatentCodec(Protocol):
    latent_channels: int
    spatial_factor: int
    temporal_factor: int

    def encode(self, video: torch.Tensor) -> torch.Tensor: ...

    def decode(self, latent: torch.Tensor) -> torch.Tensor: ...

    def decode_chunks(self, latent: torch.Tensor, chunk: int) -> Iterator[torch.Tensor]:
        """`decode(latent)` as consecutive pieces along time, `chunk` latent frames at a time
        (float32 on the CPU): a long video never has all its frames on the device at once."""
        ...


def channel_stats(values: float | Sequence[float], channels: int) -> torch.Tensor:
    """Per-channel statistic as a [1, C, 1, 1, 1] tensor from a scalar or a list of C values."""
    stats = torch.as_tensor(values, dtype=torch.float32).flatten()
    if stats.numel() == 1:
        stats = stats.expand(channels)
    if stats.numel() != channels:
        raise ValueError(f"need 1 or {channels} channel statistics, got {stats.numel()}")
    return stats.reshape(1, channels, 1, 1, 1).clone()
