"""TP=2 and TP=2 + sequence parallel reproduce TP=1: outputs and every gradient (float32), on CPU
with gloo and on 2 GPUs with NCCL.

Both TP=2 variants run in one 2-rank launch (sequence parallelism is a build flag, so one
ParallelConfig(tensor=2) serves both). The gloo test's TP=1 reference runs here; the NCCL test's
runs on one GPU, so CPU/GPU kernel differences stay out of the comparison. Canonical weights are
sharded with the per-rank fused layout, local gradients reassembled with its inverse.
"""
import pytest
import torch

from megatron_video.model import VideoDiTConfig, build_model, gather_canonical_grads, shard_canonical_state
from megatron_video.parallel.state import ParallelConfig
from megatron_video.testing.distributed import requires_gpus, run_distributed
from megatron_video.testing.weights import exercised_state

# The sum order of the TP all-reduce differs from TP=1's single matmul: float32 rounding only (on
# GPUs too: the workers turn TF32 off, and the reference runs on the same kind of device).
ATOL = 2e-5
RTOL = 1e-4

VARIANTS = {
    "parallel": dict(block="parallel"),
    "sequential": dict(block="sequential"),
    "st_lora": dict(block="parallel", spatio_temporal=True, adaln_lora_rank=8),
}


def make_config(**kw) -> VideoDiTConfig:
    return VideoDiTConfig(in_channels=8, hidden=64, layers=3, heads=4, mlp_ratio=2.0, text_dim=24, **kw)


def make_inputs(cfg):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, cfg.in_channels, 2, 4, 6, generator=g)  # 2x2x3 = 12 video tokens
    t = torch.rand(2, generator=g)
    text = torch.randn(2, 5, cfg.text_dim, generator=g)  # 5 + 12 = 17 tokens: SP must pad
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 3:] = False
    probe = torch.randn(*x.shape, generator=g)  # loss = <out, probe> gives every output a gradient
    return x, t, text, mask, probe


def run_model(cfg, state, inputs, device, sequence_parallel=False):
    """Output and every gradient of loss = <out, probe>, computed on `device`, returned on the CPU."""
    # build_model leaves megatron's layers on the GPU when there is one, torch's on the CPU: move all.
    model = build_model(cfg, sequence_parallel=sequence_parallel).to(device)
    model.load_state_dict(state, strict=True)
    x, t, text, mask, probe = (v.to(device) for v in inputs)
    out = model(x, t, text, mask)
    (out * probe).sum().backward()
    grads = {n: p.grad.detach().cpu().clone() for n, p in model.named_parameters()}
    return out.detach().cpu(), grads, model.tensor_parallel_layout()


def reference_cases(device):
    """Canonical weights (CPU) of each variant and its TP=1 output and gradients on `device`."""
    torch.manual_seed(0)
    references, cases = {}, {}
    for name, kwargs in VARIANTS.items():
        cfg = make_config(**kwargs)
        state = exercised_state(build_model(cfg))
        out, grads, layout = run_model(cfg, state, make_inputs(cfg), device)
        references[name] = (out, grads)
        cases[name] = (kwargs, state, layout)
    return references, cases


def tp_worker(cases, device):
    from megatron.core import parallel_state

    rank = parallel_state.get_tensor_model_parallel_rank()
    world = parallel_state.get_tensor_model_parallel_world_size()
    results = {}
    for name, (kwargs, state, layout) in cases.items():
        cfg = make_config(**kwargs)
        local = shard_canonical_state(state, layout, rank, world)
        for sp in (False, True):
            out, grads, _ = run_model(cfg, local, make_inputs(cfg), device, sequence_parallel=sp)
            results[(name, sp)] = (out, grads)
    return results


def check_against_reference(references, cases, ranks):
    """Both TP ranks' outputs, the reassembled gradients and the replicated ones match TP=1."""
    for (name, sp), (out, _) in ranks[0].items():
        ref_out, ref_grads = references[name]
        layout = cases[name][2]
        torch.testing.assert_close(out, ref_out, atol=ATOL, rtol=RTOL, msg=f"{name} sp={sp} output")
        torch.testing.assert_close(ranks[1][(name, sp)][0], ref_out, atol=ATOL, rtol=RTOL)
        grads = gather_canonical_grads([r[(name, sp)][1] for r in ranks], layout)
        assert grads.keys() == ref_grads.keys()
        for pname, ref in ref_grads.items():
            assert ref.abs().max() > 0, f"{pname} has no gradient in the reference: the check would be vacuous"
            torch.testing.assert_close(grads[pname], ref, atol=ATOL, rtol=RTOL,
                                       msg=lambda m, where=f"{name} sp={sp} grad {pname}": f"{where}: {m}")
        # Replicated parameters must carry the same (full) gradient on both ranks, not partial sums.
        for pname, g0 in ranks[0][(name, sp)][1].items():
            if pname not in layout:
                torch.testing.assert_close(ranks[1][(name, sp)][1][pname], g0, atol=ATOL, rtol=RTOL)


def test_tensor_and_sequence_parallel_match_single_rank(megatron_single):
    references, cases = reference_cases("cpu")
    ranks = run_distributed(tp_worker, 2, cases, "cpu", parallel=ParallelConfig(tensor=2))
    check_against_reference(references, cases, ranks)


@pytest.mark.gpu
@requires_gpus(2)
def test_tensor_and_sequence_parallel_match_single_rank_nccl():
    # The reference is TP=1 on one GPU (same kernels), made in a spawned rank like the TP=2 run.
    ((references, cases),) = run_distributed(reference_cases, 1, "cuda", device="cuda")
    ranks = run_distributed(tp_worker, 2, cases, "cuda", parallel=ParallelConfig(tensor=2), device="cuda")
    check_against_reference(references, cases, ranks)


def test_shard_index_gives_whole_heads_per_rank():
    from megatron_video.model.tp_layout import shard_index

    # q, k, v of 4 rows each (2 heads of 2), g, u of 2 rows: rank 1 of 2 holds the second half of each.
    idx = shard_index([4, 4, 4, 2, 2], rank=1, world=2)
    assert idx.tolist() == [2, 3, 6, 7, 10, 11, 13, 15]
    with pytest.raises(ValueError):
        shard_index([3], rank=0, world=2)
