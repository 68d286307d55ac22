"""build_optimizer through megatron-core: one process (fp32 and bf16), TP=2, DP=2 + distributed optimizer.

Each case trains the same tiny column->row parallel network on the same data; the TP and DP runs
must reproduce the one-process weights. The wrapping below is the one the trainer uses:
    model = DistributedDataParallel(transformer_config, DistributedDataParallelConfig(
        grad_reduce_in_fp32=True, overlap_grad_reduce=False,
        use_distributed_optimizer=parallel.distributed_optimizer), module)
    optimizer, scheduler = build_optimizer([model], optim_cfg, width, total_steps, parallel)
    per step: model.zero_grad_buffer(); optimizer.zero_grad(); loss.backward();
              model.finish_grad_sync(); optimizer.step(); scheduler.step(1)
"""
import pytest
import torch

from megatron_video.parallel.state import ParallelConfig
from megatron_video.testing.distributed import run_distributed

STEPS = 12
# Row lengths 30, 12, 20 so that the distributed optimizer's 64-aligned shards cut rows.
IN, HIDDEN, INNER, OUT, BATCH = 30, 12, 20, 3, 8


def _tiny_model(full_weights: dict, dtype: torch.dtype):
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
    return config, module.to(dtype)


def _train(full_weights, x, y, dtype, steps, sphere_init=True):
    """Train on this rank's share of (x, y); return the model's local weights and optimizer facts."""
    from megatron.core import parallel_state
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig

    from megatron_video.optim.builder import build_optimizer, init_sphere_
    from megatron_video.optim.config import OptimConfig

    parallel = ParallelConfig(tensor=parallel_state.get_tensor_model_parallel_world_size(),
                              distributed_optimizer=parallel_state.get_data_parallel_world_size() > 1)
    cfg = OptimConfig(lr=2e-2, warmup_steps=2, base_width=4, clip_grad=0.0)
    config, module = _tiny_model(full_weights, dtype)
    if sphere_init:
        init_sphere_(module, cfg)
    model = DistributedDataParallel(config, DistributedDataParallelConfig(
        grad_reduce_in_fp32=True, overlap_grad_reduce=False,
        use_distributed_optimizer=parallel.distributed_optimizer), module)
    optimizer, scheduler = build_optimizer([model], cfg, width=HIDDEN, total_steps=steps, parallel=parallel)
    dp, dp_rank = parallel_state.get_data_parallel_world_size(), parallel_state.get_data_parallel_rank()
    x, y = x.chunk(dp)[dp_rank], y.chunk(dp)[dp_rank]
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
        ok, _, _ = optimizer.step()
        assert ok
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
    return {"weights": {k: v.detach().float().clone() for k, v in module.named_parameters()},
            "main": {k: getattr(v, "main_param", v).detach().clone() for k, v in module.named_parameters()},
            "tp_rank": parallel_state.get_tensor_model_parallel_rank(), "cut_rows": cut_rows,
            "groups": groups, "base_lr": scheduler.current_lr()}


def single_process_cases(full_weights, x, y):
    return {"fp32": _train(full_weights, x, y, torch.float32, STEPS),
            "bf16": _train(full_weights, x, y, torch.bfloat16, 1000)}


def parallel_case(full_weights, x, y):
    return _train(full_weights, x, y, torch.float32, STEPS)


def _problem():
    gen = torch.Generator().manual_seed(0)
    shapes = {"patch_embed.weight": (HIDDEN, IN), "patch_embed.bias": (HIDDEN,), "col.weight": (INNER, HIDDEN),
              "col.bias": (INNER,), "row.weight": (HIDDEN, INNER), "row.bias": (HIDDEN,),
              "final_proj.weight": (OUT, HIDDEN), "final_proj.bias": (OUT,)}
    weights = {k: torch.randn(s, generator=gen) * 0.5 for k, s in shapes.items()}
    x = torch.randn(BATCH, IN, generator=gen)
    y = torch.randn(BATCH, OUT, generator=gen)
    return weights, x, y


def _assemble_tp(results):
    ordered = sorted(results, key=lambda r: r["tp_rank"])
    full = dict(ordered[0]["weights"])
    full["col.weight"] = torch.cat([r["weights"]["col.weight"] for r in ordered], dim=0)
    full["col.bias"] = torch.cat([r["weights"]["col.bias"] for r in ordered], dim=0)
    full["row.weight"] = torch.cat([r["weights"]["row.weight"] for r in ordered], dim=1)
    return full


def _max_diff(a, b):
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_megatron_paths_match_one_process_and_keep_rows_on_the_sphere():
    weights, x, y = _problem()
    (single,) = run_distributed(single_process_cases, 1, weights, x, y, parallel=ParallelConfig())
    reference = single["fp32"]["weights"]
    assert _max_diff(reference, weights) > 1e-2  # training moved the weights

    # Groups: sphere for linear weights except final_proj; muP LR base_width/width on hidden ones.
    groups = single["fp32"]["groups"]
    assert groups["col.weight"] == (True, pytest.approx(2e-2 * 4 / HIDDEN))
    assert groups["row.weight"][0] and not groups["final_proj.weight"][0] and not groups["col.bias"][0]
    assert groups["final_proj.weight"][1] == pytest.approx(2e-2 * 4 / HIDDEN)
    assert groups["patch_embed.weight"][1] == pytest.approx(2e-2)  # fan-in fixed: width-independent
    assert single["fp32"]["base_lr"] == 0.0  # the run ends at the end of the cooldown (min_lr 0)

    for name in ("patch_embed.weight", "col.weight", "row.weight"):
        assert (reference[name].norm(dim=1) - 1).abs().max() < 1e-5
        main = single["bf16"]["main"][name]
        assert main.dtype == torch.float32
        assert (main.norm(dim=1) - 1).abs().max() < 1e-5  # fp32 main params after 1,000 steps
        assert (single["bf16"]["weights"][name].norm(dim=1) - 1).abs().max() < 2e-2  # bf16 rounding
    assert abs(reference["final_proj.weight"].norm(dim=1) - 1).max() > 1e-2  # excluded: free norm

    tp_results = run_distributed(parallel_case, 2, weights, x, y, parallel=ParallelConfig(tensor=2))
    assert _max_diff(_assemble_tp(tp_results), reference) < 1e-5

    dp_results = run_distributed(parallel_case, 2, weights, x, y,
                                 parallel=ParallelConfig(distributed_optimizer=True))
    assert sum(r["cut_rows"] for r in dp_results) > 0  # a shard boundary cut a constrained row
    for result in dp_results:
        assert _max_diff(result["weights"], reference) < 1e-5
