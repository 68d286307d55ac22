"""Validation loss on held-out clips with fixed noise and timesteps, comparable across checkpoints."""
from __future__ import annotations

import torch

from megatron_video.config.schema import RootConfig
from megatron_video.data.sources import open_loader
from megatron_video.training.build import Components
from megatron_video.training.objective import condition_batch, make_microbatch
from megatron_video.training.step import run_microbatches


@torch.no_grad()
def validation_loss_of(chunks: list[torch.nn.Module], parts: Components, cfg: RootConfig,
                       dtype: torch.dtype) -> float:
    """Mean loss over `train.val_batches` validation batches (run through the pipeline schedule as
    microbatches of one step); the same draws on every call."""
    device = next(chunks[0].parameters()).device
    microbatches = []
    loader = open_loader(cfg, "val", seed=cfg.run.seed, repeat=True)
    for index, batch in zip(range(cfg.train.val_batches), loader):
        generator = torch.Generator(device).manual_seed(10_007 + index)
        latents, text, mask = condition_batch(parts, batch, device)
        microbatches.append(make_microbatch(parts, latents, text, mask, generator))
    if not microbatches:
        raise RuntimeError("no validation clips: raise data.val_fraction or add footage")
    return run_microbatches(chunks, parts, microbatches, dtype, forward_only=True)
