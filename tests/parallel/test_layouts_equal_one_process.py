"""Every parallel layout equals one process.

Context parallelism (Ulysses, ring, USP) reproduces CP=1: outputs and every gradient, with a padded
text mask and an odd joint length (text 5 + video 12 = 17 tokens, padded to the CP size), for the
parallel, sequential and ST-DiT variants, and with the attention recomputed in backward (ring); the
activations a rank keeps for backward shrink with CP.
The CP ranks' parameter gradients are summed over the CP group here, as megatron's DDP does over its
data x context group.

Three optimizer steps of four microbatches through megatron-core's schedules, with megatron DDP,
SphereAdamW and gradient clipping, give the same losses, gradient norms and weights as one process:
PP=2 with 1F1B and interleaved (VPP=2), and the 4-rank mixes TP2xCP2, TP2xPP2, DP2xCP2 (distributed
optimizer, gradient reduction overlapped with backward), CP2xPP2. That model has the value residual
(carried between stages), AdaLN-LoRA and the pooled text embedding (conditioning on every stage).

On GPUs the context-parallel case also runs in bf16 autocast (the trainer's precision there): the
CP result's largest deviation from the float32 one-process result, output and every gradient, may be
at most BF16_FACTOR times the one-GPU bf16 result's own deviation (plus BF16_FLOOR, 1%, of the largest
value): CP must cost no more precision than bf16 itself does.

Spawns are few: megatron's groups are rebuilt for each case, so one 2-rank launch serves CP=2 and
the pipeline cases, and one 4-rank launch CP=4 and the mixed layouts.
"""
import pytest
import torch

from megatron_video.model import (
    VideoDiTConfig,
    build_model,
    build_model_chunks,
    gather_canonical_grads,
    shard_canonical_state,
)
from megatron_video.parallel.state import ParallelConfig
from megatron_video.testing.distributed import requires_gpus, run_distributed
from megatron_video.testing.weights import exercised_state

CP_ATOL, CP_RTOL = 2e-5, 1e-4  # float32: only the summation order differs
TRAIN_ATOL, TRAIN_RTOL = 1e-5, 1e-4
MEMORY_RATIO = 0.6
BF16_FACTOR, BF16_FLOOR = 2.0, 1e-2
STEPS, MICROBATCHES = 3, 4

# -- context parallelism: one forward and backward -------------------------------------------------

VARIANTS = {  # name: (model kwargs, context modes to run at CP=2, at CP=4)
    "parallel": (dict(block="parallel"), ("ulysses", "ring"), ("ulysses", "ring")),
    "sequential": (dict(block="sequential", adaln_lora_rank=8), ("ring",), ()),
    "st_dit": (dict(block="parallel", spatio_temporal=True), ("ulysses",), ("ulysses",)),
    "two_heads": (dict(block="parallel", heads=2), (), ("usp",)),
    "recompute": (dict(block="parallel"), ("ring",), ()),
}
# build_model arguments of a variant: recomputing the attention in backward runs the ring's P2P again.
BUILD = {"recompute": dict(recompute="attention")}


def cp_config(**kw) -> VideoDiTConfig:
    return VideoDiTConfig(**{**dict(in_channels=8, hidden=64, layers=3, heads=4, mlp_ratio=2.0, text_dim=24,
                                    pooled_text_conditioning=True, absolute_positions=True), **kw})


def make_inputs(cfg, batch=2, latent=(2, 4, 6), text_len=5):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(batch, cfg.in_channels, *latent, generator=g)
    t = torch.rand(batch, generator=g)
    text = torch.randn(batch, text_len, cfg.text_dim, generator=g)
    mask = torch.ones(batch, text_len, dtype=torch.bool)
    mask[-1, 3:] = False
    probe = torch.randn(*x.shape, generator=g)
    return x, t, text, mask, probe


def activation_bytes_and_grads(model, inputs, device="cpu", dtype=torch.float32):
    """Output, gradients (on the CPU) and the bytes of the tensors autograd keeps for backward
    (parameters excluded) of loss = <out, probe>, the forward under autocast to `dtype`."""
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
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor), \
            torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype != torch.float32):
        out = model(x, t, text, mask).float()
    (out * probe).sum().backward()
    grads = {n: p.grad.detach().cpu().clone() for n, p in model.named_parameters()}
    return out.detach().cpu(), grads, sum(kept.values())


def context_references(device="cpu", dtype=torch.float32):
    torch.manual_seed(0)
    references, states = {}, {}
    for name, (kwargs, _, _) in VARIANTS.items():
        cfg = cp_config(**kwargs)
        model = build_model(cfg, **BUILD.get(name, {}))
        states[name] = exercised_state(model)
        references[name] = activation_bytes_and_grads(model, make_inputs(cfg), device, dtype)[:2]
    return references, states


MEMORY_CASE = dict(layers=4)


def memory_inputs(cfg):
    return make_inputs(cfg, batch=1, latent=(4, 8, 8))  # 5 text + 64 video tokens


def cp_worker(states, column, device="cpu", dtype=torch.float32):
    from megatron.core import parallel_state

    group = parallel_state.get_context_parallel_group()
    results = {}
    for name, (kwargs, *modes) in VARIANTS.items():
        for mode in modes[column]:
            cfg = cp_config(**kwargs)
            model = build_model(cfg, context_mode=mode, **BUILD.get(name, {}))
            model.load_state_dict(states[name])
            out, grads, _ = activation_bytes_and_grads(model, make_inputs(cfg), device, dtype)
            for pname, grad in grads.items():
                grad = grad.to(device)
                torch.distributed.all_reduce(grad, group=group)
                grads[pname] = grad.cpu()
            results[(name, mode)] = (out, grads)
    if column == 0 and dtype == torch.float32:
        cfg = cp_config(**MEMORY_CASE)
        results["memory"] = activation_bytes_and_grads(build_model(cfg, context_mode="ulysses"), memory_inputs(cfg),
                                                       device)[2]
    return results


def check_context(references, ranks, atol=CP_ATOL, rtol=CP_RTOL):
    for key in _cases_of(ranks):
        name, mode = key
        grads = ranks[0][key][1]
        ref_out, ref_grads = references[name]
        for rank in ranks:
            torch.testing.assert_close(rank[key][0], ref_out, atol=atol, rtol=rtol, msg=f"{name} {mode} output")
        assert grads.keys() == ref_grads.keys()
        for pname, ref in ref_grads.items():
            assert ref.abs().max() > 0, f"{pname} has no gradient in the reference: the check would be vacuous"
            torch.testing.assert_close(grads[pname], ref, atol=atol, rtol=rtol,
                                       msg=lambda m, where=f"{name} {mode} grad {pname}": f"{where}: {m}")


def bf16_references(device):
    """(float32 references, bf16 references of the same weights, the weights): one process."""
    references, states = context_references(device)
    low = {}
    for name, (kwargs, _, _) in VARIANTS.items():
        cfg = cp_config(**kwargs)
        model = build_model(cfg, **BUILD.get(name, {}))
        model.load_state_dict(states[name])
        low[name] = activation_bytes_and_grads(model, make_inputs(cfg), device, torch.bfloat16)[:2]
    return references, low, states


def check_context_bf16(references, low, ranks):
    """Each CP rank's bf16 output and gradients deviate from float32 at most BF16_FACTOR times as much
    as one process's bf16 ones do (plus BF16_FLOOR of the largest value)."""
    def deviation(value, exact):
        return float((value - exact).abs().max())

    for key in _cases_of(ranks):
        name, mode = key
        (ref_out, ref_grads), (low_out, low_grads) = references[name], low[name]
        pairs = [("output", [rank[key][0] for rank in ranks], low_out, ref_out)]
        pairs += [(f"grad {p}", [ranks[0][key][1][p]], low_grads[p], ref) for p, ref in ref_grads.items()]
        for what, values, one_process, exact in pairs:
            allowed = BF16_FACTOR * deviation(one_process, exact) + BF16_FLOOR * float(exact.abs().max())
            worst = max(deviation(v, exact) for v in values)
            assert worst <= allowed, f"{name} {mode} {what}: bf16 CP deviates {worst:.3g}, allowed {allowed:.3g}"


def _cases_of(ranks):
    return {key for key in ranks[0] if key != "memory"}



# -- training: three optimizer steps through the schedules ---------------------------------------


def train_config() -> VideoDiTConfig:
    return VideoDiTConfig(in_channels=8, hidden=64, layers=4, heads=4, mlp_ratio=2.0, text_dim=24, adaln_lora_rank=8,
                          pooled_text_conditioning=True, absolute_positions=True)


def make_microbatches() -> list[list[dict]]:
    g = torch.Generator().manual_seed(3)
    cfg = train_config()
    steps = []
    for _ in range(STEPS):
        microbatches = []
        for _ in range(MICROBATCHES):
            mask = torch.ones(2, 5, dtype=torch.bool)
            mask[1, 3:] = False
            microbatches.append({"noised": torch.randn(2, cfg.in_channels, 2, 4, 6, generator=g),
                                 "timesteps": torch.rand(2, generator=g),
                                 "text": torch.randn(2, 5, cfg.text_dim, generator=g), "mask": mask,
                                 "target": torch.randn(2, cfg.in_channels, 2, 4, 6, generator=g)})
        steps.append(microbatches)
    return steps


def canonical_name(name: str, layers: range) -> str:
    """blocks.<local>.* of a stage -> blocks.<global>.*; other names are the same on every stage."""
    if name.startswith("blocks."):
        _, index, rest = name.split(".", 2)
        return f"blocks.{layers.start + int(index)}.{rest}"
    return name


def train_layout(state: dict, steps: list[list[dict]], parallel: ParallelConfig, device: str) -> dict:
    """Losses and this rank's final weights (canonical names, TP-local values) after the steps."""
    from megatron.core import parallel_state

    from megatron_video.config.schema import RootConfig
    from megatron_video.diffusion.flow_matching import FlowMatching
    from megatron_video.optim.builder import build_optimizer
    from megatron_video.optim.config import OptimConfig
    from megatron_video.parallel.layout import validate_layout
    from megatron_video.training.build import Components
    from megatron_video.training.step import configure_schedules, run_microbatches
    from megatron_video.training.trainer import wrap_ddp

    cfg = train_config()
    root = RootConfig(model=cfg, parallel=parallel, optim=OptimConfig(lr=1e-3, warmup_steps=0, clip_grad=0.05))
    layout = validate_layout(parallel, cfg, torch.distributed.get_world_size())
    tp, tp_rank = parallel_state.get_tensor_model_parallel_world_size(), parallel_state.get_tensor_model_parallel_rank()
    chunks = build_model_chunks(cfg, parallel.sequence_parallel, context_mode=layout.context_mode)
    for chunk in chunks:
        local_names = {canonical_name(n, chunk.layers): n for n in chunk.state_dict()}
        canonical_layout = {canonical_name(n, chunk.layers): spec for n, spec in chunk.tensor_parallel_layout().items()}
        local = shard_canonical_state({c: state[c] for c in local_names}, canonical_layout, tp_rank, tp)
        chunk.load_state_dict({local_names[c]: v for c, v in local.items()})
    chunks = [wrap_ddp(chunk.to(device), root, index) for index, chunk in enumerate(chunks)]
    configure_schedules(chunks, parallel.overlap_grad_reduce)
    optimizer, scheduler = build_optimizer(chunks, root.optim, width=cfg.hidden, total_steps=STEPS, parallel=parallel)
    parts = Components(chunks=chunks, codec=None, text=None, flow=FlowMatching())
    dp, dp_rank = parallel_state.get_data_parallel_world_size(), parallel_state.get_data_parallel_rank()
    losses, norms = [], []
    for microbatches in steps:
        for chunk in chunks:
            chunk.zero_grad_buffer()
        optimizer.zero_grad()
        mine = [{k: v.to(device) for k, v in mb.items()} for mb in microbatches[dp_rank::dp]]
        losses.append(run_microbatches(chunks, parts, mine, torch.float32, forward_only=False))
        _, norm, _ = optimizer.step()
        norms.append(float(norm))
        scheduler.step(1)
    weights = {canonical_name(n, chunk.module.layers): p.detach().cpu().clone()
               for chunk in chunks for n, p in chunk.module.named_parameters()}
    return {"losses": losses, "norms": norms, "weights": weights, "tp_rank": tp_rank,
            "pp_rank": parallel_state.get_pipeline_model_parallel_rank(),
            "layout": {canonical_name(n, c.module.layers): spec for c in chunks
                       for n, spec in c.module.tensor_parallel_layout().items()}}


def training_reference(device="cpu"):
    """Canonical initial weights, the microbatches of each step and the one-process run."""
    torch.manual_seed(0)
    state = exercised_state(build_model(train_config()))
    steps = make_microbatches()
    return state, steps, train_layout(state, steps, ParallelConfig(), device)


def check_training(single: dict, initial: dict, ranks: list[dict], name: str) -> None:
    """Every rank's losses and gradient norms, and the weights reassembled from all ranks, match."""
    for rank in ranks:
        assert rank["losses"] == pytest.approx(single["losses"], rel=1e-5), name
        assert rank["norms"] == pytest.approx(single["norms"], rel=1e-4), name
    # Reassemble each pipeline stage's TP shards; every parameter must come back exactly once.
    weights, by_stage = {}, {}
    for rank in ranks:
        by_stage.setdefault(rank["pp_rank"], {})[rank["tp_rank"]] = rank
    for stage in by_stage.values():
        shards = [stage[r]["weights"] for r in sorted(stage)]
        weights.update(gather_canonical_grads(shards, stage[0]["layout"]))
    assert weights.keys() == single["weights"].keys(), name
    for pname, ref in single["weights"].items():
        torch.testing.assert_close(weights[pname], ref, atol=TRAIN_ATOL, rtol=TRAIN_RTOL,
                                   msg=lambda m, where=f"{name} {pname}": f"{where}: {m}")
    moved = max((single["weights"][p] - initial[p]).abs().max() for p in single["weights"])
    assert moved > 1e-4, "the steps did not move the weights: the comparison would be vacuous"


# -- one worker per launch ----------------------------------------------------------------------

TWO_RANKS = {"cp": (ParallelConfig(context=2), None, 0),
             "pp2_1f1b": ParallelConfig(pipeline=2, microbatches=MICROBATCHES),
             "pp2_vpp2": ParallelConfig(pipeline=2, virtual_pipeline=2, microbatches=MICROBATCHES)}
FOUR_RANKS = {"cp": (ParallelConfig(context=4), [2, 2], 1),
              "tp2_cp2": ParallelConfig(tensor=2, context=2, sequence_parallel=True),
              "tp2_pp2": ParallelConfig(tensor=2, pipeline=2, microbatches=MICROBATCHES),
              "dp2_cp2": ParallelConfig(context=2, distributed_optimizer=True, overlap_grad_reduce=True),
              "cp2_pp2": ParallelConfig(context=2, pipeline=2, virtual_pipeline=2, microbatches=MICROBATCHES,
                                        context_mode="ring")}


def launch_worker(cases, context_states, train_state, steps, device):
    """Every case in turn on the same ranks: megatron's groups are rebuilt for each."""
    from megatron.core import parallel_state

    from megatron_video.parallel.state import init_distributed

    results = {}
    for name, case in cases.items():
        parallel, hierarchical, column = case if name == "cp" else (case, None, None)
        parallel_state.destroy_model_parallel()
        init_distributed(parallel, torch.device(device), seed=1234, hierarchical_context_sizes=hierarchical)
        if name == "cp":
            results[name] = cp_worker(context_states, column, device)
        else:
            results[name] = train_layout(train_state, steps, parallel, device)
    return results


def run_launch(cases: dict, world: int, device: str) -> dict:
    """References, then one launch of `cases`; returns the CP case's ranks after checking the rest."""
    if device == "cpu":
        context = context_references()
        train_state, steps, single = training_reference()
    else:
        ((context, (train_state, steps, single)),) = run_distributed(_references, 1, device, device=device)
    references, context_states = context
    ranks = run_distributed(launch_worker, world, cases, context_states, train_state, steps, device, device=device)
    for name in cases:
        if name != "cp":
            check_training(single, train_state, [rank[name] for rank in ranks], name)
    cp_ranks = [rank["cp"] for rank in ranks]
    check_context(references, cp_ranks)
    return cp_ranks


def _references(device):
    return context_references(device), training_reference(device)


def test_two_ranks_context_and_pipeline_match_one_process(megatron_single):
    cp_ranks = run_launch(TWO_RANKS, 2, "cpu")
    assert _cases_of(cp_ranks) == {("parallel", "ulysses"), ("parallel", "ring"), ("sequential", "ring"),
                                   ("st_dit", "ulysses"), ("recompute", "ring")}
    cfg = cp_config(**MEMORY_CASE)
    torch.manual_seed(0)
    single = activation_bytes_and_grads(build_model(cfg), memory_inputs(cfg))[2]
    for rank in cp_ranks:
        assert rank["memory"] <= MEMORY_RATIO * single, (rank["memory"], single)


@pytest.mark.slow
def test_four_ranks_usp_and_mixed_layouts_match_one_process(megatron_single):
    cp_ranks = run_launch(FOUR_RANKS, 4, "cpu")
    assert _cases_of(cp_ranks) == {("parallel", "ulysses"), ("parallel", "ring"), ("st_dit", "ulysses"),
                                   ("two_heads", "usp")}


@pytest.mark.gpu
@requires_gpus(4)
def test_layouts_match_one_process_nccl():
    # References on one GPU (same kernels), made in a spawned rank like the parallel runs.
    run_launch(TWO_RANKS, 2, "cuda")
    run_launch(FOUR_RANKS, 4, "cuda")


@pytest.mark.gpu
@requires_gpus(4)
def test_context_parallel_in_bf16_costs_no_more_precision_than_bf16_nccl():
    ((references, low, states),) = run_distributed(bf16_references, 1, "cuda", device="cuda")
    for world, cases in ((2, TWO_RANKS), (4, FOUR_RANKS)):
        parallel, hierarchical, column = cases["cp"]
        ranks = run_distributed(cp_worker, world, states, column, "cuda", torch.bfloat16, parallel=parallel,
                                device="cuda", hierarchical_context_sizes=hierarchical)
        check_context_bf16(references, low, ranks)
