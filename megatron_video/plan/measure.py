"""Measure what the planner estimates: one real training step's saved activations and peak memory.

The step is the trainer's (megatron_video/training/trainer.py) on one GPU: fp32 model with sphere
rows, megatron DDP, SphereAdamW through megatron's optimizer, the flow-matching loss under autocast.
Saved activations are counted with a saved-tensors hook (distinct storages, parameters excluded),
which works on any device; the peak is torch.cuda.max_memory_allocated over the second step (the
first creates the optimizer state) less what was allocated before the model was built, so it is
measured on CUDA only.
"""
from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import Self

import torch

from megatron_video.model.config import VideoDiTConfig
from megatron_video.parallel.state import ParallelConfig


@dataclass
class StepMemory:
    saved_activations: int
    peak: int | None  # None off CUDA


class SavedTensorBytes:
    """Counts the distinct storages autograd saves inside its context, leaving `exclude` out."""

    def __init__(self, exclude: list[torch.Tensor]):
        self.exclude = {t.untyped_storage().data_ptr() for t in exclude}
        self.storages: dict[int, int] = {}
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda tensor: tensor)

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in self.exclude:
            self.storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    @property
    def total(self) -> int:
        return sum(self.storages.values())

    def __enter__(self) -> Self:
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)


def measure_training_step(cfg: VideoDiTConfig, batch: int, latent: tuple[int, int, int], text_len: int,
                          device: torch.device, dtype: torch.dtype,
                          parallel: ParallelConfig | None = None) -> StepMemory:
    """Run a training step of `cfg` on (batch, latent, text_len) samples and measure it (on CUDA the
    second step, after the first has created the optimizer state). parallel_state must be
    initialised on `device` with the sizes of `parallel` (default: one rank)."""
    from megatron_video.config.schema import RootConfig
    from megatron_video.diffusion.flow_matching import FlowMatching
    from megatron_video.model import build_model
    from megatron_video.optim.builder import build_optimizer, init_sphere_
    from megatron_video.training.build import Components
    from megatron_video.training.objective import make_microbatch
    from megatron_video.training.step import configure_schedules, run_microbatches
    from megatron_video.training.trainer import wrap_ddp

    if device.type == "cuda":  # what is already allocated (an earlier measurement's leftovers) is not ours
        gc.collect()
        torch.cuda.synchronize(device)
        already = torch.cuda.memory_allocated(device)
    root = RootConfig(model=cfg, parallel=parallel or ParallelConfig())
    model = build_model(cfg, sequence_parallel=root.parallel.sequence_parallel).to(device)
    init_sphere_(model, root.optim)
    ddp = wrap_ddp(model, root, 0)
    configure_schedules([ddp])
    optimizer, _ = build_optimizer([ddp], root.optim, width=cfg.hidden, total_steps=root.optim.warmup_steps + 1,
                                   parallel=root.parallel)
    # The loss needs only the objective of the trainer's components: no codec or text encoder here.
    parts = Components(chunks=[model], codec=None, text=None, flow=FlowMatching())
    generator = torch.Generator(device).manual_seed(0)
    latents = torch.randn(batch, cfg.in_channels, *latent, device=device, generator=generator)
    text = torch.randn(batch, text_len, cfg.text_dim, device=device, generator=generator)
    mask = torch.ones(batch, text_len, dtype=torch.bool, device=device)

    def step() -> int:
        ddp.zero_grad_buffer()
        optimizer.zero_grad()
        microbatch = make_microbatch(parts, latents, text, mask, generator)
        # The trainer's forward and backward (one microbatch): backward saves nothing new.
        with SavedTensorBytes(list(model.parameters())) as saved:
            run_microbatches([ddp], parts, [microbatch], dtype, forward_only=False)
        optimizer.step()
        return saved.total

    if device.type == "cuda":
        step()
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    saved = step()
    peak = None
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - already
    return StepMemory(saved_activations=saved, peak=peak)
