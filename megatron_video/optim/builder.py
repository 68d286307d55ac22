"""Build the optimiser and LR schedule for DDP-wrapped model chunks through megatron-core.

megatron's `get_megatron_optimizer` makes the param groups (from our config_overrides: muP LR,
weight-decay and sphere flags per parameter), the DDP grad buffers, the mixed-precision main params,
the distributed-optimizer sharding, gradient clipping and checkpoint plumbing. It builds a
torch/TE/Apex Adam as the inner optimizer of each megatron optimizer; we then substitute
SphereAdamW for it over the very same param groups (which megatron has already rewritten to hold
the fp32 main params or their DP shards) and tell it where each of those tensors sits in the rows
of its weight matrix. One inner optimizer per megatron optimizer is required because the
distributed optimizer owns every parameter of a buffer through it.
"""
from __future__ import annotations

from collections import defaultdict

import torch
import torch.distributed as dist
from megatron.core import parallel_state
from megatron.core.optimizer import (
    DistributedOptimizer,
    Float16OptimizerWithFloat16Params,
    FP32Optimizer,
    MegatronOptimizer,
    OptimizerConfig,
    ParamKey,
    ParamWithNamePredicate,
    get_megatron_optimizer,
)
from torch import nn

from megatron_video.model.fp8.state import refresh_weights_after_steps
from megatron_video.optim.classify import rows_span_tensor_parallel, sphere_parameters
from megatron_video.optim.config import OptimConfig
from megatron_video.optim.mup import lr_multiplier
from megatron_video.optim.rows import RowGeometry, RowSlice
from megatron_video.optim.schedule import WarmupConstantCooldown, build_scheduler
from megatron_video.optim.sphere_adamw import SphereAdamW
from megatron_video.parallel.state import ParallelConfig


def model_name(name: str) -> str:
    """A parameter name as the bare model states it (DDP/Float16 wrappers add `module.`)."""
    while name.startswith("module."):
        name = name[len("module."):]
    return name


@torch.no_grad()
def init_sphere_(model: nn.Module, cfg: OptimConfig) -> None:
    """Scale every row of the constrained weights to unit norm (call before DDP wrapping)."""
    tp_group = parallel_state.get_tensor_model_parallel_group() if dist.is_initialized() \
        and parallel_state.model_parallel_is_initialized() else None
    for param in sphere_parameters(model, cfg).values():
        norm_sq = param.float().pow(2).sum(dim=1)
        if tp_group is not None and rows_span_tensor_parallel(param) and dist.get_world_size(tp_group) > 1:
            dist.all_reduce(norm_sq, group=tp_group)
        param.copy_(param.float() / norm_sq.sqrt().unsqueeze(1))


def _config_overrides(model_chunks: list, cfg: OptimConfig, width: int) -> dict:
    """One megatron ParamKey per (sphere, LR multiplier, weight-decay) class of parameters."""
    constrained = {id(p) for chunk in model_chunks for p in sphere_parameters(chunk, cfg).values()}
    classes: dict[tuple, set[int]] = defaultdict(set)
    for chunk in model_chunks:
        for name, param in chunk.named_parameters():
            sphere = id(param) in constrained
            # No decay on the sphere (the retraction fixes the norm) nor on biases/gains/scalars.
            decays = not sphere and param.dim() >= 2
            classes[(sphere, lr_multiplier(model_name(name), param, width, cfg), decays)].add(id(param))
    overrides = {}
    for (sphere, multiplier, decays), members in classes.items():
        predicate = ParamWithNamePredicate(name=f"mvideo_sphere{int(sphere)}_lr{multiplier:.6g}_wd{int(decays)}",
                                           fn=lambda param, name, members=members: id(param) in members)
        override = {"max_lr": cfg.lr * multiplier, "min_lr": cfg.lr * cfg.min_lr_fraction * multiplier,
                    "wd_mult": 1.0 if decays else 0.0, "sphere": sphere}
        if sphere:
            # megatron re-pairs saved and current param groups by (max_lr, min_lr, start_wd, end_wd,
            # wd_mult, ...) when loading a checkpoint, not by our `sphere` key: a zero weight-decay
            # range keeps a sphere group apart from an unconstrained group of equal LR.
            override.update(start_wd=0.0, end_wd=0.0)
        overrides[ParamKey(with_name_predicate=predicate)] = override
    return overrides


def _leaf_optimizers(optimizer: MegatronOptimizer) -> list[MegatronOptimizer]:
    return list(getattr(optimizer, "chained_optimizers", [optimizer]))


def _inner_tensors(leaf: MegatronOptimizer) -> list[tuple[torch.Tensor, torch.Tensor, int]]:
    """(tensor the inner optimizer updates, its model param, offset of its first element in the
    param's flattened local shape) for every tensor of `leaf`."""
    if isinstance(leaf, DistributedOptimizer):
        pairs = [pair for model_g, shard_g in zip(leaf.model_float16_groups, leaf.shard_fp32_from_float16_groups)
                 for pair in zip(model_g, shard_g)]
        pairs += [pair for model_g, shard_g in zip(leaf.model_fp32_groups, leaf.shard_fp32_groups)
                  for pair in zip(model_g, shard_g)]
        return [(shard, param, leaf._get_model_param_range_map(param)["param"].start) for param, shard in pairs]
    if isinstance(leaf, Float16OptimizerWithFloat16Params):
        pairs = [pair for model_g, main_g in zip(leaf.float16_groups, leaf.fp32_from_float16_groups)
                 for pair in zip(model_g, main_g)]
        pairs += [(p, p) for group in leaf.fp32_from_fp32_groups for p in group]
        return [(main, param, 0) for param, main in pairs]
    if isinstance(leaf, FP32Optimizer):
        return [(p, p, 0) for group in leaf.optimizer.param_groups for p in group["params"]]
    raise TypeError(f"no SphereAdamW substitution for {type(leaf).__name__}")


def _row_geometry(leaf: MegatronOptimizer, constrained: list[torch.Tensor]) -> RowGeometry:
    """Slots for every constrained matrix of the model (in model order, identical on all ranks of
    a DP group and, shape for shape, of a TP group), row-parallel ones first."""
    ordered = sorted(constrained, key=lambda p: not rows_span_tensor_parallel(p))
    slot_of, slot = {}, 0
    for param in ordered:
        slot_of[id(param)] = slot
        slot += param.shape[0]
    tp_rows = sum(p.shape[0] for p in ordered if rows_span_tensor_parallel(p))
    slices = {id(inner): RowSlice(param.shape[1], first, slot_of[id(param)])
              for inner, param, first in _inner_tensors(leaf) if id(param) in slot_of}
    sharded = isinstance(leaf, DistributedOptimizer)
    return RowGeometry(slices, slot, tp_rows, device=ordered[0].device if ordered else torch.device("cpu"),
                       data_parallel_group=leaf.data_parallel_group if sharded else None,
                       tensor_parallel_group=parallel_state.get_tensor_model_parallel_group())


def _keep_loaded_step(leaf: DistributedOptimizer) -> None:
    """Loading model-space optimizer state (megatron's fully_reshardable format) copies each saved
    tensor onto the matching state tensor, and the inner optimizer's `step` tensor has no saved
    counterpart there: megatron sets it from the param groups just before. Keep that one as loaded."""
    set_states = leaf._set_main_param_and_optimizer_states

    def with_step(model_param: torch.Tensor, tensors: dict) -> None:
        group_index, group_order = leaf.model_param_group_index_map[model_param]
        state = leaf.optimizer.state[leaf.optimizer.param_groups[group_index]["params"][group_order]]
        if "step" in state and "step" not in tensors:
            tensors = {**tensors, "step": state["step"]}
        set_states(model_param, tensors)

    leaf._set_main_param_and_optimizer_states = with_step


def init_optimizer_state(optimizer: MegatronOptimizer) -> None:
    """Give every inner optimizer its full state before a checkpoint is loaded into it (the
    distributed optimizer reads the step from that state while building its sharded state dict)."""
    for leaf in _leaf_optimizers(optimizer):
        if leaf.optimizer is not None:
            leaf.optimizer.init_state()


def build_optimizer(model_chunks: list, cfg: OptimConfig, width: int, total_steps: int,
                    parallel: ParallelConfig) -> tuple[MegatronOptimizer, WarmupConstantCooldown]:
    """megatron optimizer (zero_grad, step -> (ok, grad_norm, zeros), state_dict ...) whose inner
    optimizer is SphereAdamW, and the base-LR schedule stepping its per-group LRs."""
    dtypes = {p.dtype for chunk in model_chunks for p in chunk.parameters()}
    if torch.float16 in dtypes:
        raise ValueError("fp16 parameters are not supported: use bf16 (no loss scaling is set up)")
    bf16 = torch.bfloat16 in dtypes
    config = OptimizerConfig(
        optimizer="adam", lr=cfg.lr, min_lr=cfg.lr * cfg.min_lr_fraction, weight_decay=cfg.weight_decay,
        adam_beta1=cfg.betas[0], adam_beta2=cfg.betas[1], adam_eps=cfg.eps, clip_grad=cfg.clip_grad,
        bf16=bf16, params_dtype=torch.bfloat16 if bf16 else torch.float32,
        use_distributed_optimizer=parallel.distributed_optimizer)
    optimizer = get_megatron_optimizer(config, model_chunks,
                                       config_overrides=_config_overrides(model_chunks, cfg, width))
    constrained = [p for chunk in model_chunks for p in sphere_parameters(chunk, cfg).values()]
    for leaf in _leaf_optimizers(optimizer):
        if leaf.optimizer is None:  # a rank without trainable parameters in this leaf
            continue
        inner = SphereAdamW.over_groups(leaf.optimizer.param_groups, lr=cfg.lr, betas=tuple(cfg.betas),
                                        eps=cfg.eps, weight_decay=cfg.weight_decay,
                                        fused=None if cfg.fused_kernels else False)
        inner.set_row_geometry(_row_geometry(leaf, constrained))
        refresh_weights_after_steps(inner, model_chunks)  # these chunks' FP8 weight copies only
        leaf.optimizer = inner
        leaf.init_state_fn = lambda opt, config=None: opt.init_state()  # megatron calls it to load
        if isinstance(leaf, DistributedOptimizer):
            _keep_loaded_step(leaf)
    return optimizer, build_scheduler(optimizer, cfg, total_steps)
