"""Latent codecs: video [B, 3, T, H, W] in [-1, 1] <-> normalised latents [B, C, T', H', W']."""
from megatron_video.model.codec.base import LatentCodec
from megatron_video.model.codec.pixel import PixelCodec
from megatron_video.model.codec.wan_vae import WanVAECodec

__all__ = ["LatentCodec", "PixelCodec", "WanVAECodec"]
