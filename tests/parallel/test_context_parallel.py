"""Context parallelism (Ulysses, ring, USP) reproduces CP=1: outputs and every gradient, with a padded
text mask and an odd joint length (text 5 + video 12 = 17 tokens, padded to the CP size), for the
parallel, sequential and ST-DiT variants; and the activations a rank keeps for backward shrink with CP.

The CP ranks' parameter gradients are summed over the CP group here, as megatron's DDP does over its
data x context group. Cases are grouped per launch: CP=2 (ulysses, ring, memory) in one 2-rank
launch, CP=4 (usp on a 2-head model, ring and ulysses) in one 4-rank launch.
"""
import pytest
import torch

from megatron_video.model import VideoDiTConfig, build_model
from megatron_video.parallel.state import ParallelConfig
from megatron_video.testing.distributed import requires_gpus, run_distributed
from megatron_video.testing.weights import exercised_state

ATOL, RTOL = 2e-5, 1e-4  # float32: only the summation order differs
MEMORY_RATIO = 0.6

VARIANTS = {  # name: (model kwargs, context modes to run at CP=2, at CP=4)
    "parallel": (dict(block="parallel"), ("ulysses", "ring"), ("ulysses", "ring")),
    "sequential": (dict(block="sequential", adaln_lora_rank=8), ("ring",), ()),
    "st_dit": (dict(block="parallel", spatio_temporal=True), ("ulysses",), ("ulysses",)),
    "two_heads": (dict(block="parallel", heads=2), (), ("usp",)),
}


def make_config(**kw) -> VideoDiTConfig:
    return VideoDiTConfig(**{**dict(in_channels=8, hidden=64, layers=3, heads=4, mlp_ratio=2.0, text_dim=24), **kw})


def make_inputs(cfg, batch=2, latent=(2, 4, 6), text_len=5):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(batch, cfg.in_channels, *latent, generator=g)
    t = torch.rand(batch, generator=g)
    text = torch.randn(batch, text_len, cfg.text_dim, generator=g)
    mask = torch.ones(batch, text_len, dtype=torch.bool)
    mask[-1, 3:] = False
    probe = torch.randn(*x.shape, generator=g)
    return x, t, text, mask, probe


def activation_bytes_and_grads(model, inputs, device="cpu"):
    """Output, gradients (on the CPU) and the bytes of the tensors autograd keeps for backward
    (parameters excluded) of loss = <out, probe>."""
    model = model.to(device)  # build_model leaves megatron's layers on the GPU when there is one
    inputs = [v.to(device) for v in inputs]
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            kept[storage.data_ptr()] = storage.nbytes()
        return tensor

    x, t, text, mask, probe = inputs
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = model(x, t, text, mask)
    (out * probe).sum().backward()
    grads = {n: p.grad.detach().cpu().clone() for n, p in model.named_parameters()}
    return out.detach().cpu(), grads, sum(kept.values())


def reference_cases(device="cpu"):
    torch.manual_seed(0)
    references, states = {}, {}
    for name, (kwargs, _, _) in VARIANTS.items():
        cfg = make_config(**kwargs)
        model = build_model(cfg)
        states[name] = exercised_state(model)
        references[name] = activation_bytes_and_grads(model, make_inputs(cfg), device)[:2]
    return references, states


MEMORY_CASE = dict(layers=4)


def memory_inputs(cfg):
    return make_inputs(cfg, batch=1, latent=(4, 8, 8))  # 5 text + 64 video tokens


def cp_worker(states, column, device="cpu"):
    from megatron.core import parallel_state

    group = parallel_state.get_context_parallel_group()
    results = {}
    for name, (kwargs, *modes) in VARIANTS.items():
        for mode in modes[column]:
            cfg = make_config(**kwargs)
            model = build_model(cfg, context_mode=mode)
            model.load_state_dict(states[name])
            out, grads, _ = activation_bytes_and_grads(model, make_inputs(cfg), device)
            for pname, grad in grads.items():
                grad = grad.to(device)
                torch.distributed.all_reduce(grad, group=group)
                grads[pname] = grad.cpu()
            results[(name, mode)] = (out, grads)
    if column == 0:
        cfg = make_config(**MEMORY_CASE)
        results["memory"] = activation_bytes_and_grads(build_model(cfg, context_mode="ulysses"), memory_inputs(cfg),
                                                       device)[2]
    return results


def check(references, ranks):
    for key in _cases_of(ranks):
        name, mode = key
        grads = ranks[0][key][1]
        ref_out, ref_grads = references[name]
        for rank in ranks:
            torch.testing.assert_close(rank[key][0], ref_out, atol=ATOL, rtol=RTOL, msg=f"{name} {mode} output")
        assert grads.keys() == ref_grads.keys()
        for pname, ref in ref_grads.items():
            assert ref.abs().max() > 0, f"{pname} has no gradient in the reference: the check would be vacuous"
            torch.testing.assert_close(grads[pname], ref, atol=ATOL, rtol=RTOL,
                                       msg=lambda m, where=f"{name} {mode} grad {pname}": f"{where}: {m}")


def _cases_of(ranks):
    return {key for key in ranks[0] if key != "memory"}


def test_context_parallel_two_ranks_matches_one_and_halves_activations(megatron_single):
    references, states = reference_cases()
    ranks = run_distributed(cp_worker, 2, states, 0, parallel=ParallelConfig(context=2))
    assert _cases_of(ranks) == {("parallel", "ulysses"), ("parallel", "ring"), ("sequential", "ring"),
                                ("st_dit", "ulysses")}
    check(references, ranks)
    cfg = make_config(**MEMORY_CASE)
    torch.manual_seed(0)
    single = activation_bytes_and_grads(build_model(cfg), memory_inputs(cfg))[2]
    for rank in ranks:
        assert rank["memory"] <= MEMORY_RATIO * single, (rank["memory"], single)


def test_context_parallel_four_ranks_usp_ring_ulysses_match_one(megatron_single):
    references, states = reference_cases()
    ranks = run_distributed(cp_worker, 4, states, 1, parallel=ParallelConfig(context=4),
                            hierarchical_context_sizes=[2, 2])
    assert _cases_of(ranks) == {("parallel", "ulysses"), ("parallel", "ring"), ("st_dit", "ulysses"),
                                ("two_heads", "usp")}
    check(references, ranks)


@pytest.mark.gpu
@requires_gpus(4)
def test_context_parallel_matches_one_rank_nccl():
    # The reference is CP=1 on one GPU (same kernels), made in a spawned rank like the CP runs.
    ((references, states),) = run_distributed(reference_cases, 1, "cuda", device="cuda")
    check(references, run_distributed(cp_worker, 2, states, 0, "cuda", parallel=ParallelConfig(context=2),
                                      device="cuda"))
    check(references, run_distributed(cp_worker, 4, states, 1, "cuda", parallel=ParallelConfig(context=4),
                                      hierarchical_context_sizes=[2, 2], device="cuda"))
