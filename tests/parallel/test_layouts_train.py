"""Three optimizer steps of four microbatches through megatron-core's schedules, with megatron DDP,
SphereAdamW and gradient clipping, give the same losses and weights in every layout as in one process:
PP=2 with 1F1B and interleaved (VPP=2), and the 4-rank mixes TP2xCP2, TP2xPP2, DP2xCP2 (distributed
optimizer, gradient reduction overlapped with backward), CP2xPP2.

Each launch re-initialises megatron's groups per layout, so one spawn serves several layouts. The
model has a padded text mask, an odd joint length (5 + 12 = 17 tokens), the value residual (carried
between stages) and AdaLN-LoRA (conditioning on every stage).
"""
import pytest
import torch

from megatron_video.model import VideoDiTConfig, build_model_chunks, gather_canonical_grads, shard_canonical_state
from megatron_video.parallel.state import ParallelConfig
from megatron_video.testing.distributed import requires_gpus, run_distributed
from megatron_video.testing.weights import exercised_state

ATOL, RTOL = 1e-5, 1e-4
STEPS, MICROBATCHES = 3, 4


def make_config() -> VideoDiTConfig:
    return VideoDiTConfig(in_channels=8, hidden=64, layers=4, heads=4, mlp_ratio=2.0, text_dim=24, adaln_lora_rank=8)


def make_microbatches() -> list[list[dict]]:
    g = torch.Generator().manual_seed(3)
    cfg = make_config()
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

    cfg = make_config()
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
            "layout": {k: v.cpu() if torch.is_tensor(v) else v for k, v in
                       {canonical_name(n, c.module.layers): spec for c in chunks
                        for n, spec in c.module.tensor_parallel_layout().items()}.items()}}


def layouts_worker(state, steps, layouts, device):
    """Every layout in turn on the same ranks: megatron's groups are rebuilt for each."""
    from megatron.core import parallel_state

    from megatron_video.parallel.state import init_distributed

    results = {}
    for name, parallel in layouts.items():
        parallel_state.destroy_model_parallel()
        init_distributed(parallel, torch.device(device), seed=1234)
        results[name] = train_layout(state, steps, parallel, device)
    return results


def reference(device="cpu"):
    """Canonical initial weights and the one-process run."""
    from megatron_video.model import build_model

    torch.manual_seed(0)
    state = exercised_state(build_model(make_config()))
    steps = make_microbatches()
    return state, steps, train_layout(state, steps, ParallelConfig(), device)


def check(single: dict, ranks: list[dict], name: str) -> None:
    for rank in ranks:
        assert rank[name]["losses"] == pytest.approx(single["losses"], rel=1e-5), name
        assert rank[name]["norms"] == pytest.approx(single["norms"], rel=1e-4), name
    # Reassemble each pipeline stage's TP shards; every parameter must come back exactly once.
    weights = {}
    by_stage = {}
    for rank in ranks:
        by_stage.setdefault(rank[name]["pp_rank"], {})[rank[name]["tp_rank"]] = rank[name]
    for stage in by_stage.values():
        shards = [stage[r]["weights"] for r in sorted(stage)]
        weights.update(gather_canonical_grads(shards, stage[0]["layout"]))
    assert weights.keys() == single["weights"].keys(), name
    for pname, ref in single["weights"].items():
        torch.testing.assert_close(weights[pname], ref, atol=ATOL, rtol=RTOL,
                                   msg=lambda m, where=f"{name} {pname}": f"{where}: {m}")
    moved = max((single["weights"][p] - REFERENCE_STATE[p]).abs().max() for p in single["weights"])
    assert moved > 1e-4, "the steps did not move the weights: the comparison would be vacuous"


REFERENCE_STATE: dict = {}

TWO_RANKS = {"pp2_1f1b": ParallelConfig(pipeline=2, microbatches=MICROBATCHES),
             "pp2_vpp2": ParallelConfig(pipeline=2, virtual_pipeline=2, microbatches=MICROBATCHES)}
FOUR_RANKS = {"tp2_cp2": ParallelConfig(tensor=2, context=2, sequence_parallel=True),
              "tp2_pp2": ParallelConfig(tensor=2, pipeline=2, microbatches=MICROBATCHES),
              "dp2_cp2": ParallelConfig(context=2, distributed_optimizer=True, overlap_grad_reduce=True),
              "cp2_pp2": ParallelConfig(context=2, pipeline=2, virtual_pipeline=2, microbatches=MICROBATCHES,
                                        context_mode="ring")}


def run_layouts(layouts: dict, world: int, device: str) -> None:
    if device == "cpu":
        state, steps, single = reference()
    else:
        ((state, steps, single),) = run_distributed(reference, 1, device, device=device)
    REFERENCE_STATE.update(state)
    ranks = run_distributed(layouts_worker, world, state, steps, layouts, device, device=device)
    for name in layouts:
        check(single, ranks, name)


def test_pipeline_1f1b_and_interleaved_match_one_process(megatron_single):
    run_layouts(TWO_RANKS, 2, "cpu")


@pytest.mark.slow
def test_four_rank_mixed_layouts_match_one_process(megatron_single):
    run_layouts(FOUR_RANKS, 4, "cpu")


@pytest.mark.gpu
@requires_gpus(4)
def test_layouts_match_one_process_nccl():
    run_layouts(TWO_RANKS, 2, "cuda")
    run_layouts(FOUR_RANKS, 4, "cuda")
