"""WanVAECodec: the Wan 2.x causal 3D VAE (diffusers AutoencoderKLWan) from a local path.

Wan2.2-TI2V-5B's VAE gives 48 channels at 16x spatial and 4x temporal compression (T frames ->
1 + (T - 1) / 4 latent frames). Latents are normalised channel-wise, with the statistics shipped in
the VAE config (latents_mean / latents_std) unless others are given.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from megatron_video.model.codec.base import channel_stats


class WanVAECodec:
    def __init__(self, path: str | Path, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        from diffusers import AutoencoderKLWan

        self.vae = AutoencoderKLWan.from_pretrained(str(path), torch_dtype=dtype).to(device).eval()
        config = self.vae.config
        self.latent_channels = config.z_dim
        self.temporal_factor = config.scale_factor_temporal
        self.spatial_factor = config.scale_factor_spatial
        self.mean = channel_stats(config.latents_mean if mean is None else mean, self.latent_channels)
        self.std = channel_stats(config.latents_std if std is None else std, self.latent_channels)
        self.device, self.dtype = torch.device(device), dtype

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """video [B, 3, T, H, W] in [-1, 1] -> normalised posterior mean [B, C, T', H', W'] (float32)."""
        latent = self.vae.encode(video.to(self.device, self.dtype)).latent_dist.mean.float()
        return (latent - self.mean.to(latent)) / self.std.to(latent)

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        latent = latent.float().to(self.device) * self.std.to(self.device) + self.mean.to(self.device)
        return self.vae.decode(latent.to(self.dtype)).sample.float().clamp(-1.0, 1.0)

    @torch.no_grad()
    def decode_chunks(self, latent: torch.Tensor, chunk: int) -> Iterator[torch.Tensor]:
        """The causal decoder runs one latent frame at a time on a feature cache, as diffusers'
        AutoencoderKLWan._decode does, so the chunks join exactly into `decode(latent)`."""
        from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify

        vae = self.vae
        latent = latent.float().to(self.device) * self.std.to(self.device) + self.mean.to(self.device)
        x = vae.post_quant_conv(latent.to(self.dtype))
        vae.clear_cache()
        try:
            for start in range(0, x.shape[2], chunk):
                pieces = []
                for frame in range(start, min(start + chunk, x.shape[2])):
                    vae._conv_idx = [0]
                    pieces.append(vae.decoder(x[:, :, frame:frame + 1], feat_cache=vae._feat_map,
                                              feat_idx=vae._conv_idx, first_chunk=frame == 0))
                out = torch.cat(pieces, dim=2)
                if vae.config.patch_size is not None:
                    out = unpatchify(out, patch_size=vae.config.patch_size)
                yield out.float().clamp(-1.0, 1.0).cpu()
        finally:
            vae.clear_cache()
