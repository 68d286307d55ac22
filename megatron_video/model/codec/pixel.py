"""PixelCodec: space-to-depth "latents" for the CPU demo (no learned VAE needed).

factor=4 folds each 4x4 RGB patch into channels: 3 * 4 * 4 = 48 channels, the Wan2.2 VAE's latent
width, so the demo model has the production model's input shape at 1/4 (not 1/16) spatial downsampling.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from megatron_video.model.codec.base import channel_stats


class PixelCodec:
    temporal_factor = 1

    def __init__(self, factor: int = 4, mean: float | Sequence[float] = 0.0, std: float | Sequence[float] = 0.5):
        self.spatial_factor = factor
        self.latent_channels = 3 * factor * factor
        self.mean = channel_stats(mean, self.latent_channels)
        self.std = channel_stats(std, self.latent_channels)

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = video.shape
        f = self.spatial_factor
        if h % f or w % f:
            raise ValueError(f"frame size {h}x{w} is not divisible by the codec factor {f}")
        x = video.reshape(b, c, t, h // f, f, w // f, f).permute(0, 1, 4, 6, 2, 3, 5)
        x = x.reshape(b, c * f * f, t, h // f, w // f)
        return (x - self.mean.to(x)) / self.std.to(x)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        latent = latent * self.std.to(latent) + self.mean.to(latent)
        b, _, t, h, w = latent.shape
        f = self.spatial_factor
        x = latent.reshape(b, 3, f, f, t, h, w).permute(0, 1, 4, 5, 2, 6, 3)
        return x.reshape(b, 3, t, h * f, w * f)

    def decode_chunks(self, latent: torch.Tensor, chunk: int) -> Iterator[torch.Tensor]:
        for start in range(0, latent.shape[2], chunk):  # frames decode independently
            yield self.decode(latent[:, :, start:start + chunk]).float().cpu()
