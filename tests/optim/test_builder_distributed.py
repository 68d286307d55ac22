"""build_optimizer through megatron-core: one process (fp32 and bf16), TP=2, DP=2 + distributed optimizer,
on CPU with gloo and on GPUs with NCCL (one-GPU reference).

Each case trains the same tiny column->row parallel network (conftest.py, which also shows the
trainer's wrapping) on the same data; the TP and DP runs must reproduce the one-process weights.
"""
import pytest
import torch

from megatron_video.parallel.state import ParallelConfig
from megatron_video.testing.distributed import requires_gpus, run_distributed

SPHERE = ("patch_embed.weight", "col.weight", "row.weight")


def _assemble_tp(results, key="weights"):
    ordered = sorted(results, key=lambda r: r["tp_rank"])
    full = dict(ordered[0][key])
    full["col.weight"] = torch.cat([r[key]["col.weight"] for r in ordered], dim=0)
    full["col.bias"] = torch.cat([r[key]["col.bias"] for r in ordered], dim=0)
    full["row.weight"] = torch.cat([r[key]["row.weight"] for r in ordered], dim=1)
    return full


def _max_row_norm_error(weights):
    return max((weights[name].norm(dim=1) - 1).abs().max().item() for name in SPHERE)


def _max_diff(a, b):
    return max((a[k] - b[k]).abs().max().item() for k in a)


def check_megatron_paths(megatron_cases, device: str) -> None:
    """One process, TP=2, DP=2 + distributed optimizer, all on `device`; the TP and DP runs must
    reproduce the one-process weights."""
    hidden = megatron_cases.hidden
    weights, x, y = megatron_cases.problem()
    (single,) = run_distributed(megatron_cases.single_process_cases, 1, weights, x, y, device,
                                parallel=ParallelConfig(), device=device)
    reference = single["fp32"]["weights"]
    assert _max_diff(reference, weights) > 1e-2  # training moved the weights
    assert min(single["fp32"]["grad_norms"]) > 0.05  # so clipping (at 0.05) acted on every step

    # Groups: sphere for linear weights except final_proj; muP LR base_width/width on hidden ones.
    groups = single["fp32"]["groups"]
    assert groups["col.weight"] == (True, pytest.approx(2e-2 * 4 / hidden))
    assert groups["row.weight"][0] and not groups["final_proj.weight"][0] and not groups["col.bias"][0]
    assert groups["final_proj.weight"][1] == pytest.approx(2e-2 * 4 / hidden)
    assert groups["patch_embed.weight"][1] == pytest.approx(2e-2)  # fan-in fixed: width-independent
    assert single["fp32"]["base_lr"] == 0.0  # the run ends at the end of the cooldown (min_lr 0)

    assert _max_row_norm_error(reference) < 1e-5
    assert all(single["bf16"]["main"][name].dtype == torch.float32 for name in SPHERE)
    assert _max_row_norm_error(single["bf16"]["main"]) < 1e-5  # fp32 main params after 1,000 steps
    assert _max_row_norm_error(single["bf16"]["weights"]) < 2e-2  # the bf16 copies: rounding only
    assert abs(reference["final_proj.weight"].norm(dim=1) - 1).max() > 1e-2  # excluded: free norm

    # < 1e-5 on GPUs too: the reference ran on the same device with TF32 off, so only the TP
    # all-reduce's and the DP reduce-scatter's float32 summation order differ.
    tp_results = run_distributed(megatron_cases.parallel_case, 2, weights, x, y, device,
                                 parallel=ParallelConfig(tensor=2), device=device)
    assert _max_diff(_assemble_tp([r["fp32"] for r in tp_results]), reference) < 1e-5
    assert _max_row_norm_error(_assemble_tp([r["bf16"] for r in tp_results], key="main")) < 1e-5

    dp_results = run_distributed(megatron_cases.parallel_case, 2, weights, x, y, device,
                                 parallel=ParallelConfig(distributed_optimizer=True), device=device)
    assert sum(r["fp32"]["cut_rows"] for r in dp_results) > 0  # a shard boundary cut a constrained row
    for result in dp_results:
        assert _max_diff(result["fp32"]["weights"], reference) < 1e-5
        assert _max_row_norm_error(result["bf16"]["main"]) < 1e-5  # bf16 params, fp32 main shards


def test_megatron_paths_match_one_process_and_keep_rows_on_the_sphere(megatron_cases):
    check_megatron_paths(megatron_cases, "cpu")


@pytest.mark.gpu
@requires_gpus(2)
def test_megatron_paths_match_one_process_and_keep_rows_on_the_sphere_nccl(megatron_cases):
    check_megatron_paths(megatron_cases, "cuda")
