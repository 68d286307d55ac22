"""The native FP8 layers under TP=2 and TP=2 + sequence parallel against FP8 at TP=1 (CPU, gloo).

Per-tensor scaling reproduces TP=1 to float32 rounding although each rank scales its own shards:
scales are powers of two, and multiplying by a power of two leaves a number's mantissa, hence its
FP8 rounding, unchanged, so a shard quantises to the same values under its own scale as under the
whole tensor's. Row-wise scaling cannot be that exact: its kernel writes bf16, so each rank's
partial sums are rounded before the all-reduce, and those roundings move later FP8 roundings; the
result differs from TP=1 by about FP8's own error, so it is held to the FP8-vs-float32 bound of
test_fp8.py (a missing or doubled reduction would be off by O(1)).
"""
import torch

from megatron_video.model import VideoDiTConfig, build_model, gather_canonical_grads, shard_canonical_state
from megatron_video.model.fp8.settings import Fp8Settings
from megatron_video.parallel.state import ParallelConfig
from megatron_video.testing.distributed import run_distributed

TOLERANCE = {"tensor": 1e-5, "row": 0.2}
SCALINGS = ("tensor", "row")


def make_config() -> VideoDiTConfig:
    return VideoDiTConfig(in_channels=8, hidden=64, layers=2, heads=4, mlp_ratio=2.0, text_dim=24)


def make_inputs(cfg):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, cfg.in_channels, 2, 4, 6, generator=g)  # 12 video + 5 text tokens: SP pads
    text = torch.randn(2, 5, cfg.text_dim, generator=g)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 3:] = False
    return x, torch.rand(2, generator=g), text, mask, torch.randn(*x.shape, generator=g)


def run_model(cfg, state, scaling, sequence_parallel=False):
    model = build_model(cfg, sequence_parallel=sequence_parallel, fp8=Fp8Settings("native", scaling))
    model.load_state_dict(state)
    x, t, text, mask, probe = make_inputs(cfg)
    out = model(x, t, text, mask)
    (out * probe).sum().backward()
    return out.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def tp_worker(state, layout):
    from megatron.core import parallel_state

    local = shard_canonical_state(state, layout, parallel_state.get_tensor_model_parallel_rank(),
                                  parallel_state.get_tensor_model_parallel_world_size())
    return {(scaling, sp): run_model(make_config(), local, scaling, sp) for scaling in SCALINGS for sp in (False, True)}


def close(actual, expected, tolerance, what):
    error = float((actual - expected).norm() / expected.norm())
    assert error < tolerance, f"{what}: relative error {error:.2e}"


def test_native_fp8_under_tensor_and_sequence_parallel_matches_one_rank(megatron_single):
    cfg = make_config()
    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():  # non-zero modulation so every path carries gradient
        for p in model.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.05)
    state = {k: v.detach().clone() if torch.is_tensor(v) else v for k, v in model.state_dict().items()}
    layout = model.tensor_parallel_layout()
    references = {scaling: run_model(cfg, state, scaling) for scaling in SCALINGS}
    ranks = run_distributed(tp_worker, 2, state, layout, parallel=ParallelConfig(tensor=2))
    for (scaling, sp), (out, _) in ranks[0].items():
        ref_out, ref_grads = references[scaling]
        what = f"scaling={scaling} sp={sp}"
        close(out, ref_out, TOLERANCE[scaling], f"{what} output")
        close(ranks[1][(scaling, sp)][0], ref_out, TOLERANCE[scaling], f"{what} output rank 1")
        grads = gather_canonical_grads([r[(scaling, sp)][1] for r in ranks], layout)
        for name, ref in ref_grads.items():
            if ref.abs().max() > 0:
                close(grads[name], ref, TOLERANCE[scaling], f"{what} grad {name}")
