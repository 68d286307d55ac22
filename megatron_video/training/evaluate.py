"""Validation loss on held-out clips with fixed noise and timesteps, comparable across checkpoints."""
from __future__ import annotations

import pathlib

import torch

from megatron_video.config.schema import RootConfig
from megatron_video.data.sources import open_loader
from megatron_video.training.build import Components, build_components, start_layout
from megatron_video.training.environment import resolve_device, resolve_dtype
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


_components_by_config: dict[int, Components] = {}


def validation_loss(cfg: RootConfig, state_dict: dict[str, torch.Tensor]) -> float:
    """Validation loss of given weights (post-hoc EMA scores candidate averages with this); the
    model and encoders are built once per configuration and reloaded with each candidate."""
    device = resolve_device(cfg.run.device)
    if id(cfg) not in _components_by_config:
        start_layout(cfg, device)
        _components_by_config[id(cfg)] = build_components(cfg, device, pathlib.Path(cfg.run.output_dir),
                                                          encode_inline=cfg.data.source != "latents")
    parts = _components_by_config[id(cfg)]
    parts.model.load_state_dict(state_dict)
    parts.model.eval()
    return validation_loss_of([parts.model], parts, cfg, resolve_dtype(cfg.train.precision, device))
