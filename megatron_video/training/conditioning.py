"""The frozen encoders in front of the DiT: the latent codec and the (cached) text encoder."""
from __future__ import annotations

import pathlib

import torch

from megatron_video.config.run import EncodersConfig
from megatron_video.model.codec import LatentCodec, PixelCodec, WanVAECodec
from megatron_video.model.text import CachedTextEncoder, MiniLMTextEncoder, T5TextEncoder, TextEncoder


def build_codec(cfg: EncodersConfig, device: torch.device) -> LatentCodec:
    if cfg.codec == "wan":
        return WanVAECodec(cfg.codec_path, device=device)
    return PixelCodec(factor=cfg.pixel_factor)


def build_text_encoder(cfg: EncodersConfig, device: torch.device, run_dir: pathlib.Path) -> TextEncoder:
    if cfg.text == "t5":
        encoder: TextEncoder = T5TextEncoder(cfg.text_path, max_len=cfg.max_text_len, device=device)
    else:
        encoder = MiniLMTextEncoder(max_len=cfg.max_text_len, device=device)
    return CachedTextEncoder(encoder, cfg.cache_dir or str(run_dir / "text_cache"))
