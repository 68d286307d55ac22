"""Build the pieces every subcommand needs from one configuration: model, encoders, objective."""
from __future__ import annotations

import pathlib
from dataclasses import dataclass

import torch

from megatron_video.config.schema import RootConfig
from megatron_video.diffusion.flow_matching import FlowMatching
from megatron_video.model import VideoDiT, build_model
from megatron_video.model.codec import LatentCodec
from megatron_video.model.text import TextEncoder
from megatron_video.optim.builder import init_sphere_
from megatron_video.training.conditioning import build_codec, build_text_encoder


@dataclass
class Components:
    model: VideoDiT
    codec: LatentCodec
    text: TextEncoder
    flow: FlowMatching


def build_components(cfg: RootConfig, device: torch.device, run_dir: pathlib.Path) -> Components:
    """Model in fp32 master weights on `device` (constrained rows on the sphere), encoders frozen."""
    model = build_model(cfg.model, sequence_parallel=cfg.parallel.sequence_parallel, fp8=cfg.train.fp8_settings(),
                        recompute=cfg.train.recompute).to(device)
    if cfg.optim.sphere:
        init_sphere_(model, cfg.optim)
    return Components(model=model, codec=build_codec(cfg.encoders, device),
                      text=build_text_encoder(cfg.encoders, device, run_dir),
                      flow=FlowMatching(shift=cfg.train.timestep_shift, logit_mean=cfg.train.logit_mean,
                                        logit_std=cfg.train.logit_std))
