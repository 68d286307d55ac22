"""Helpers for tests/optim: a tiny column->row parallel megatron network trained through
build_optimizer exactly as the trainer does:

    model = DistributedDataParallel(transformer_config, DistributedDataParallelConfig(
        grad_reduce_in_fp32=True, overlap_grad_reduce=False,
        use_distributed_optimizer=parallel.distributed_optimizer), module)
    optimizer, scheduler = build_optimizer([model], optim_cfg, width, total_steps, parallel)
    per step: model.zero_grad_buffer(); optimizer.zero_grad(); loss.backward();
              model.finish_grad_sync(); optimizer.step(); scheduler.step(1)

The module-level functions below run inside run_distributed's workers (loaded from this file by
path) and in GPU tests; test files reach them through the `megatron_cases` fixture.
"""
from types import SimpleNamespace

import pytest
import torch

from megatron_video.parallel.state import ParallelConfig

STEPS = 12
# Row lengths 30, 12, 20 so that the distributed optimizer's 64-aligned shards cut rows.
IN, HIDDEN, INNER, OUT, BATCH = 30, 12, 20, 3, 8


def _tiny_model(full_weights: dict, dtype: torch.dtype, device: torch.device):
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel import ColumnParallelLinear, RowParallelLinear
    from megatron.core.transformer import TransformerConfig
    from megatron.core.transformer.module import MegatronModule

    tp = parallel_state.get_tensor_model_parallel_world_size()
    rank = parallel_state.get_tensor_model_parallel_rank()
    config = TransformerConfig(num_layers=1, hidden_size=HIDDEN, num_attention_heads=2,
                               tensor_model_parallel_size=tp, use_cpu_initialization=True,
                               bf16=dtype == torch.bfloat16, params_dtype=torch.float32)

    class TinyNet(MegatronModule):
        def __init__(self):
            super().__init__(config)
            self.patch_embed = torch.nn.Linear(IN, HIDDEN)
            self.col = ColumnParallelLinear(HIDDEN, INNER, config=config, init_method=torch.nn.init.zeros_,
                                            bias=True, gather_output=False)
            self.row = RowParallelLinear(INNER, HIDDEN, config=config, init_method=torch.nn.init.zeros_,
                                         bias=True, input_is_parallel=True, skip_bias_add=False)
            self.final_proj = torch.nn.Linear(HIDDEN, OUT)

        def forward(self, x):
            h = torch.nn.functional.gelu(self.patch_embed(x))
            h = torch.nn.functional.gelu(self.col(h)[0])
            return self.final_proj(self.row(h)[0])

    module = TinyNet()
    with torch.no_grad():
        for name, param in module.named_parameters():
            full = full_weights[name]
            if getattr(param, "tensor_model_parallel", False):
                full = full.chunk(tp, dim=param.partition_dim)[rank]
            param.copy_(full)
    return config, module.to(device=device, dtype=dtype)


def train_tiny(full_weights, x, y, dtype, steps, device="cpu"):
    """Train on this rank's share of (x, y); return the model's local weights and optimizer facts."""
    from megatron.core import parallel_state
    from megatron.core.distributed import (
        DistributedDataParallel,
        DistributedDataParallelConfig,
    )

    from megatron_video.optim.builder import build_optimizer, init_sphere_
    from megatron_video.optim.config import OptimConfig

    parallel = ParallelConfig(tensor=parallel_state.get_tensor_model_parallel_world_size(),
                              distributed_optimizer=parallel_state.get_data_parallel_world_size() > 1)
    cfg = OptimConfig(lr=2e-2, warmup_steps=2, base_width=4, clip_grad=0.05)  # clipping active
    device = torch.device(device)
    config, module = _tiny_model(full_weights, dtype, device)
    init_sphere_(module, cfg)
    model = DistributedDataParallel(config, DistributedDataParallelConfig(
        grad_reduce_in_fp32=True, overlap_grad_reduce=False,
        use_distributed_optimizer=parallel.distributed_optimizer), module)
    optimizer, scheduler = build_optimizer([model], cfg, width=HIDDEN, total_steps=steps, parallel=parallel)
    dp, dp_rank = parallel_state.get_data_parallel_world_size(), parallel_state.get_data_parallel_rank()
    x, y = x.chunk(dp)[dp_rank].to(device), y.chunk(dp)[dp_rank].to(device)
    grad_norms = []
    for step in range(steps):
        if step == steps // 2 and not parallel.distributed_optimizer:
            # The trainer's checkpoint path, mid-run: a state_dict round trip must change nothing
            # (megatron re-pairs param groups by their LR/WD keys; the TP/DP runs do no round trip).
            state = optimizer.state_dict()
            inner = state["optimizer"]["state"] if "optimizer" in state else state["state"]
            assert inner and all("exp_avg" in s and "step" in s for s in inner.values())
            optimizer.load_state_dict(state)
        model.zero_grad_buffer()
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x.to(dtype)).float(), y)
        loss.backward()
        model.finish_grad_sync()
        ok, grad_norm, _ = optimizer.step()
        assert ok
        grad_norms.append(float(grad_norm))
        scheduler.step(1)
    leaves = getattr(optimizer, "chained_optimizers", [optimizer])
    geometry = leaves[0].optimizer.row_geometry
    cut_rows = sum(1 for inner, piece in ((t, geometry.slices[id(t)]) for g in leaves[0].optimizer.param_groups
                                          for t in g["params"] if id(t) in geometry.slices)
                   if piece.first_element % piece.row_length or
                   (piece.first_element + inner.numel()) % piece.row_length)
    groups = {name: (group["sphere"], group["max_lr"]) for name, p in module.named_parameters()
              for group in optimizer.param_groups
              if any(q is getattr(p, "main_param", p) or q.data_ptr() == p.data_ptr() for q in group["params"])}
    return {"weights": {k: v.detach().float().cpu().clone() for k, v in module.named_parameters()},
            "main": _full_main_params(module, leaves[0]),
            "tp_rank": parallel_state.get_tensor_model_parallel_rank(), "cut_rows": cut_rows,
            "groups": groups, "base_lr": scheduler.current_lr(), "grad_norms": grad_norms}


def _full_main_params(module, leaf) -> dict:
    """The fp32 main params as whole tensors; the distributed optimizer's DP shards are summed
    into place over the DP group."""
    from megatron.core import parallel_state

    sharded = parallel_state.get_data_parallel_world_size() > 1
    result = {}
    for name, param in module.named_parameters():
        if param.dtype == torch.float32:  # fp32 model params are their own (all-gathered) main params
            main = param
        elif not sharded:
            main = param.main_param
        else:  # every rank joins the all-reduce, also those holding no shard of this param
            main = torch.zeros(param.numel(), dtype=torch.float32, device=param.device)
            if getattr(param, "main_param", None) is not None:
                shard = leaf._get_model_param_range_map(param)["param"]
                main[shard.start:shard.end] = param.main_param
            torch.distributed.all_reduce(main, group=parallel_state.get_data_parallel_group())
            main = main.view(param.shape)
        result[name] = main.detach().float().cpu().clone()
    return result


def single_process_cases(full_weights, x, y, device="cpu"):
    return {"fp32": train_tiny(full_weights, x, y, torch.float32, STEPS, device),
            "bf16": train_tiny(full_weights, x, y, torch.bfloat16, 1000, device)}


def parallel_case(full_weights, x, y, device="cpu"):
    return {"fp32": train_tiny(full_weights, x, y, torch.float32, STEPS, device),
            "bf16": train_tiny(full_weights, x, y, torch.bfloat16, 200, device)}


def tiny_problem():
    gen = torch.Generator().manual_seed(0)
    shapes = {"patch_embed.weight": (HIDDEN, IN), "patch_embed.bias": (HIDDEN,), "col.weight": (INNER, HIDDEN),
              "col.bias": (INNER,), "row.weight": (HIDDEN, INNER), "row.bias": (HIDDEN,),
              "final_proj.weight": (OUT, HIDDEN), "final_proj.bias": (OUT,)}
    weights = {k: torch.randn(s, generator=gen) * 0.5 for k, s in shapes.items()}
    x = torch.randn(BATCH, IN, generator=gen)
    y = torch.randn(BATCH, OUT, generator=gen)
    return weights, x, y


@pytest.fixture
def megatron_cases():
    return SimpleNamespace(hidden=HIDDEN, problem=tiny_problem, single_process_cases=single_process_cases,
                           parallel_case=parallel_case)
