"""The trainer's side of data.buckets and data.packing: checks before any work, the loader, and
the microbatch of one bucket's batch or of one packed row (per-sample timesteps, noise, text)."""
from __future__ import annotations

from functools import partial

import torch
from torch.utils.data import DataLoader

from megatron_video.config import ConfigError
from megatron_video.config.schema import RootConfig
from megatron_video.data.bucketed_dataset import build_bucketed_loader
from megatron_video.data.buckets import Bucket, latent_tokens, parse_buckets
from megatron_video.data.packing import check_packing
from megatron_video.diffusion.flow_matching import FlowMatching
from megatron_video.model.packing import pack_samples
from megatron_video.training.build import Components
from megatron_video.training.objective import encode_batch, make_microbatch


def bucketed(cfg: RootConfig) -> bool:
    return bool(cfg.data.buckets) or cfg.data.packing


def sample_tokens(bucket: Bucket, text_len: int, spatial: int, temporal: int, patch: list[int]) -> int:
    """Text + video tokens one sample of `bucket` takes in the joint sequence."""
    return text_len + latent_tokens(bucket, spatial, temporal, patch)


def check_buckets(cfg: RootConfig, context_mode: str, device_type: str) -> None:
    """Refuse bucket sizes and packing settings that cannot train, naming the key, before any work."""
    if cfg.data.source != "clips":
        raise ConfigError("data.source", f"is {cfg.data.source}: buckets and packing decode clips in the trainer "
                                         "(source=clips); latent and remote batches have one size")
    buckets = parse_buckets(cfg.data.buckets or [[cfg.data.frames, cfg.data.height, cfg.data.width]])
    if cfg.data.packing:
        check_packing(context_mode, cfg.model.packed_attention, device_type)
    if cfg.encoders.codec != "pixel":
        return  # the Wan VAE's factors are known once it loads: the packer checks the budget then
    factor = cfg.encoders.pixel_factor
    for bucket in buckets:
        if bucket.height % (factor * cfg.model.patch[1]) or bucket.width % (factor * cfg.model.patch[2]) \
                or bucket.frames % cfg.model.patch[0]:
            raise ConfigError("data.buckets", f"{bucket}: height and width must be multiples of pixel_factor*patch "
                                              f"({factor * cfg.model.patch[1]}), frames of patch[0]")
        need = sample_tokens(bucket, cfg.encoders.max_text_len, factor, 1, cfg.model.patch)
        if cfg.data.packing and need > cfg.data.pack_tokens:
            raise ConfigError("data.pack_tokens", f"{cfg.data.pack_tokens} is below the {need} tokens of one "
                                                  f"{bucket} sample")


def bucketed_loader(cfg: RootConfig, parts: Components, skip_batches: int) -> DataLoader:
    tokens_of = partial(sample_tokens, text_len=cfg.encoders.max_text_len, spatial=parts.codec.spatial_factor,
                        temporal=parts.codec.temporal_factor, patch=cfg.model.patch)
    return build_bucketed_loader(cfg.data, cfg.run.seed, tokens_of, skip_batches)


def packed_microbatch(flow: FlowMatching, latents: list[torch.Tensor], texts: list[torch.Tensor],
                      masks: list[torch.Tensor], patch: list[int], length: int, multiple: int,
                      generator: torch.Generator) -> dict:
    """One packed row: every sample its own timestep and noise, noised and target as packed tokens."""
    video, text, mask, layout = pack_samples(latents, texts, masks, patch, length, multiple)
    t = flow.sample_timesteps(len(latents), video.device, generator=generator)
    noise = torch.randn(video.shape, generator=generator, device=generator.device).to(video.device)
    per_token = t[layout.video_segments(video.device)]
    return {"noised": flow.noised(video[0], noise[0], per_token)[None], "timesteps": t, "text": text,
            "mask": mask, "target": flow.velocity_target(video, noise), "pack": layout}


def bucketed_microbatch(parts: Components, cfg: RootConfig, batch: dict, drop: torch.Tensor,
                        device: torch.device, generator: torch.Generator) -> dict:
    """The microbatch of one loader batch: a stacked bucket batch as make_microbatch does it, or a
    packed row whose samples are encoded one by one (their shapes differ)."""
    if not cfg.data.packing:
        latents, text, mask = encode_batch(parts, batch["video"].to(device), batch["caption"], drop)
        return make_microbatch(parts, latents, text, mask, generator)
    encoded = [encode_batch(parts, video[None].to(device), [caption], drop[i:i + 1])
               for i, (video, caption) in enumerate(zip(batch["video"], batch["caption"]))]
    return packed_microbatch(parts.flow, [e[0][0] for e in encoded], [e[1][0] for e in encoded],
                             [e[2][0] for e in encoded], cfg.model.patch, cfg.data.pack_tokens,
                             parts.chunks[0].sequence_multiple(), generator)

