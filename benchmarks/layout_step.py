"""The trainer's optimizer step under one TP x CP x PP x DP layout, timed on every rank of a torchrun
world, with the memory planner's estimate of the same step beside the measured peak.

Shared by the multi-GPU training benchmarks (cp_training_scaling, layout_throughput). One launch
measures many layouts: megatron's groups are rebuilt for each (as tests/parallel does), so a
layout of fewer model-parallel ranks than the world runs as data-parallel replicas, each training
its own sample, and every GPU of the host works in every row. The step is the trainer's
(megatron_video/training): fp32 master weights on the sphere, megatron DDP, SphereAdamW through
megatron's optimizer, bf16 autocast, every microbatch through `get_forward_backward_func`.

Per-GPU TFLOP/s counts the project's formula (model_flops: every matmul, attention backward as 2x
its forward) over every sample the world trained in the step, divided by the world size. A layout
the planner says does not fit is not run (its row says so); one that runs out of memory anyway is
reported the same way, provided every rank runs out (ranks of one layout are symmetric).
"""
from __future__ import annotations

import gc
import os
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

from megatron_video.config import ConfigError
from megatron_video.model.config import VideoDiTConfig
from megatron_video.model.flops import model_flops
from megatron_video.model.patchify import patch_grid
from megatron_video.parallel.state import ParallelConfig, init_distributed
from megatron_video.plan import memory as plan

# Features the planner's `pending` list names when the project does not run them; all are built.
BUILT = {"context", "pipeline", "recompute", "fp8"}


@dataclass(frozen=True)
class StepCase:
    """One row: a layout (data parallel is the rest of the world) and the sample it trains on."""

    name: str
    parallel: ParallelConfig
    latent: tuple[int, int, int]  # (T, H, W) of one sample's latents
    micro_batch: int = 1


def start_world(tiny: bool) -> torch.device:
    """This rank's device (its local rank's GPU; the CPU with `tiny` or without CUDA) and the torchrun
    world's default group on it (NCCL on GPUs, gloo on the CPU), one-rank under plain `python`."""
    cuda = torch.cuda.is_available() and not tiny
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if cuda else torch.device("cpu")
    init_distributed(ParallelConfig(), device)
    return device


def use_layout(parallel: ParallelConfig, cfg: VideoDiTConfig, device: torch.device):
    """Rebuild megatron's groups for `parallel` on the whole world; returns the validated Layout."""
    from megatron.core import parallel_state

    from megatron_video.parallel.layout import validate_layout

    layout = validate_layout(parallel, cfg, dist.get_world_size())
    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    init_distributed(parallel, device, seed=1234, hierarchical_context_sizes=layout.hierarchical_context_sizes)
    return layout


def planned(cfg: VideoDiTConfig, case: StepCase, data: int, text_len: int, precision: str) -> plan.MemoryPlan:
    p = case.parallel
    grid = patch_grid(case.latent, cfg.patch)
    work = plan.Workload(video_tokens=grid[0] * grid[1] * grid[2], text_tokens=text_len)
    layout = plan.Layout(tensor=p.tensor, pipeline=p.pipeline, context=p.context, data=data,
                         sequence_parallel=p.sequence_parallel, distributed_optimizer=p.distributed_optimizer,
                         virtual_pipeline=p.virtual_pipeline, micro_batch=case.micro_batch,
                         micro_batches=p.microbatches, precision=precision)
    return plan.plan_memory(cfg, work, layout, built=BUILT)


def capacity_bytes(device: torch.device) -> int | None:
    """What one GPU can hold, less the planner's default headroom (None off CUDA)."""
    if device.type != "cuda":
        return None
    total = torch.cuda.get_device_properties(device).total_memory
    return total - int(4.0 * 2**30)


def _all_ranks(flag: bool, device: torch.device) -> int:
    """How many ranks of the world have `flag` set."""
    count = torch.tensor([int(flag)], device=device)
    dist.all_reduce(count)
    return int(count.item())


def _max_over_ranks(value: float, device: torch.device) -> float:
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def _train_steps(cfg: VideoDiTConfig, case: StepCase, layout, text_len: int, device: torch.device,
                 dtype: torch.dtype, steps: int, warmup: int) -> tuple[float, int | None, float]:
    """(median step seconds, the slowest rank's each step; peak bytes over the timed steps on this
    rank, less what was allocated before the model was built; the mean loss) of the trainer's step
    under the current groups."""
    from megatron.core import parallel_state

    from megatron_video.config.schema import RootConfig
    from megatron_video.diffusion.flow_matching import FlowMatching
    from megatron_video.model import build_model_chunks
    from megatron_video.optim.builder import build_optimizer, init_sphere_
    from megatron_video.training.build import Components
    from megatron_video.training.objective import make_microbatch
    from megatron_video.training.step import configure_schedules, run_microbatches
    from megatron_video.training.trainer import wrap_ddp

    already = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    root = RootConfig(model=cfg, parallel=case.parallel)
    chunks = build_model_chunks(cfg, case.parallel.sequence_parallel, context_mode=layout.context_mode)
    for chunk in chunks:
        chunk.to(device)
        init_sphere_(chunk, root.optim)
    ddp = [wrap_ddp(chunk, root, index) for index, chunk in enumerate(chunks)]
    configure_schedules(ddp, case.parallel.overlap_grad_reduce)
    optimizer, _ = build_optimizer(ddp, root.optim, width=cfg.hidden,
                                   total_steps=root.optim.warmup_steps + steps + warmup, parallel=case.parallel)
    parts = Components(chunks=chunks, codec=None, text=None, flow=FlowMatching())
    # Each data-parallel replica trains its own samples; CP and TP ranks of a replica share theirs.
    generator = torch.Generator(device).manual_seed(parallel_state.get_data_parallel_rank())
    shape = (case.micro_batch, cfg.in_channels, *case.latent)
    microbatches = []
    for _ in range(case.parallel.microbatches):
        latents = torch.randn(shape, device=device, generator=generator)
        text = torch.randn(case.micro_batch, text_len, cfg.text_dim, device=device, generator=generator)
        mask = torch.ones(case.micro_batch, text_len, dtype=torch.bool, device=device)
        microbatches.append(make_microbatch(parts, latents, text, mask, generator))

    def step() -> float:
        for chunk in ddp:
            chunk.zero_grad_buffer()
        optimizer.zero_grad()
        loss = run_microbatches(ddp, parts, microbatches, dtype, forward_only=False)
        optimizer.step()
        return loss

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):  # the first step creates the optimizer state and picks attention kernels
        step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, loss = [], 0.0
    for _ in range(steps):
        dist.barrier()
        sync()
        start = time.perf_counter()
        loss = step()
        sync()
        times.append(_max_over_ranks(time.perf_counter() - start, device))
    peak = torch.cuda.max_memory_allocated(device) - already if device.type == "cuda" else None
    times.sort()
    return times[len(times) // 2], peak, loss


def measure(cfg: VideoDiTConfig, case: StepCase, device: torch.device, dtype: torch.dtype, steps: int = 3,
            warmup: int = 1) -> dict:
    """One row: the layout, step time, per-GPU TFLOP/s, peak memory (max over ranks) and the plan."""
    world = dist.get_world_size()
    try:
        layout = use_layout(case.parallel, cfg, device)
    except ConfigError as refused:  # the same on every rank, before any collective
        return {"name": case.name, "layers": cfg.layers, "status": f"refused: {refused}"}
    text_len = cfg.max_text_len
    grid = patch_grid(case.latent, cfg.patch)
    estimate = planned(cfg, case, layout.data, text_len, "bf16" if dtype == torch.bfloat16 else "fp32")
    p = case.parallel
    row = {"name": case.name, "layers": cfg.layers, "tensor": layout.tensor, "context": layout.context,
           "pipeline": layout.pipeline, "virtual_pipeline": layout.virtual_pipeline, "data": layout.data,
           "context_mode": layout.context_mode, "ulysses": layout.ulysses, "sequence_parallel": p.sequence_parallel,
           "distributed_optimizer": p.distributed_optimizer, "microbatches": p.microbatches,
           "micro_batch": case.micro_batch, "latent": list(case.latent), "video_tokens": grid[0] * grid[1] * grid[2],
           "text_tokens": text_len, "gpus": world, "planned_peak_gib": round(estimate.peak / 2**30, 2)}
    capacity = capacity_bytes(device)
    if capacity is not None and not estimate.fits(capacity):
        return {**row, "status": "not run: the planner's peak exceeds the GPU "
                                 f"({estimate.peak / 2**30:.1f} > {capacity / 2**30:.1f} GiB)"}
    oom = False
    try:
        step_s, peak, loss = _train_steps(cfg, case, layout, text_len, device, dtype, steps, warmup)
    except torch.cuda.OutOfMemoryError:
        oom, step_s, peak, loss = True, 0.0, None, 0.0
    finally:
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if _all_ranks(oom, device):
        return {**row, "status": "out of memory"}
    samples = layout.data * case.micro_batch * case.parallel.microbatches
    flops = samples * model_flops(cfg, (cfg.in_channels, *case.latent), text_len)
    row.update(status="ok", step_s=round(step_s, 4), tflops_per_gpu=round(flops / step_s / world / 1e12, 6),
               flops_per_step=flops, loss=round(loss, 5))
    if peak is not None:
        peak = _max_over_ranks(float(peak), device)
        row["measured_peak_gib"] = round(peak / 2**30, 2)
        row["plan_relative_error"] = round(estimate.peak / peak - 1, 4)
    return row
