"""Build the pieces every subcommand needs from one configuration: model, encoders, objective."""
from __future__ import annotations

import os
import pathlib
from dataclasses import dataclass

import torch
import torch.distributed as dist

from megatron_video.config import ConfigError
from megatron_video.config.schema import RootConfig
from megatron_video.data.latent_shards import StoredEmptyPrompt
from megatron_video.diffusion.flow_matching import FlowMatching
from megatron_video.model import VideoDiT, build_model_chunks
from megatron_video.model.codec import LatentCodec
from megatron_video.model.text import TextEncoder
from megatron_video.optim.builder import init_sphere_
from megatron_video.parallel.layout import Layout, validate_layout
from megatron_video.parallel.state import init_distributed
from megatron_video.training.conditioning import build_codec, build_text_encoder


@dataclass
class Components:
    chunks: list[VideoDiT]  # this rank's pipeline stages (one model without pipeline parallelism)
    codec: LatentCodec | None  # None where the data brings latents (data.source=latents)
    text: TextEncoder
    flow: FlowMatching

    @property
    def model(self) -> VideoDiT:
        """The whole model (sampling, EMA scoring): only without pipeline parallelism."""
        if len(self.chunks) != 1 or not (self.chunks[0].pre_process and self.chunks[0].post_process):
            raise ConfigError("parallel.pipeline", "this command runs the whole model on each rank: set it to 1")
        return self.chunks[0]


def start_layout(cfg: RootConfig, device: torch.device) -> Layout:
    """Validate the layout against the world size and the model, then start the process groups."""
    layout = validate_layout(cfg.parallel, cfg.model, int(os.environ.get("WORLD_SIZE", "1")))
    init_distributed(cfg.parallel, device, seed=cfg.run.seed,
                     hierarchical_context_sizes=layout.hierarchical_context_sizes)
    return layout


def build_components(cfg: RootConfig, device: torch.device, run_dir: pathlib.Path,
                     encode_inline: bool = True) -> Components:
    """This rank's model chunks in fp32 master weights on `device` (constrained rows on the
    sphere), linear layers for train.fp8, recomputing train.recompute in backward, encoders frozen.
    Without `encode_inline` (training and validation on latent shards, whose batches bring latents
    and text states) neither the VAE nor the text encoder is loaded: the only prompt such a run
    encodes, text dropout's empty one, was stored with the latents. The process groups must be
    started (start_layout)."""
    layout = validate_layout(cfg.parallel, cfg.model, dist.get_world_size())
    chunks = [chunk.to(device) for chunk in build_model_chunks(
        cfg.model, sequence_parallel=cfg.parallel.sequence_parallel, context_mode=layout.context_mode,
        fp8=cfg.train.fp8_settings(), recompute=cfg.train.recompute)]
    if cfg.optim.sphere:
        for chunk in chunks:
            init_sphere_(chunk, cfg.optim)
    if encode_inline:
        codec, text = build_codec(cfg.encoders, device), build_text_encoder(cfg.encoders, device, run_dir)
    else:
        codec, text = None, StoredEmptyPrompt(cfg.data.latents)
    return Components(chunks=chunks, codec=codec, text=text,
                      flow=FlowMatching(shift=cfg.train.timestep_shift, logit_mean=cfg.train.logit_mean,
                                        logit_std=cfg.train.logit_std))
