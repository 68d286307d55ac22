"""dit_step: training-step throughput of the 1B VideoDiT at 32K video tokens, bf16, one GPU.

Forward + backward of one sample (latent 48 x 16 x 64 x 128 -> 32,768 video tokens after 1x2x2
patches, plus 512 text tokens). MFU against the GPU's dense bf16 peak, counted two ways for the same
step: the project's formula (model_flops: every matmul, attention backward as 2x its forward) is
the headline; torch's FlopCounterMode, which counts what the step dispatched (attention backward as
2.5x its forward), is reported beside it. FlopCounterMode has no formula for custom kernels such as
FlashAttention-4, so it counts one step run on an SDPA kernel it knows (`COUNTING_BACKEND`): the
FLOPs are the same whichever kernel computes them. `--fp8`, `--recompute` and `--attention-backend`
select the throughput options; what the measured attention choice timed per shape (and which
kernels refused the inputs) and what it picked are listed. `--breakdown` adds where the step's
GPU time goes: attention, GEMMs and the rest, forward and backward, with the formula's TFLOP/s for
attention and GEMMs, and the share of the step during which no kernel ran. `--quick` runs a tiny
model on the CPU to check the script end to end.
"""
from __future__ import annotations

import contextlib
import functools
import pathlib
import sys

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from benchmarks.block_parallel_vs_sequential import _gpu_time_split
from benchmarks.common import model_benchmark_args, time_call, write_result
from megatron_video.model import build_model, load_preset, model_flops
from megatron_video.model.attention import Attention
from megatron_video.model.attention_choice import MEASURED
from megatron_video.model.config import ATTENTION_BACKENDS
from megatron_video.model.flops import attention_flops, peak_tflops
from megatron_video.model.fp8.settings import Fp8Settings
from megatron_video.model.patchify import patch_grid
from megatron_video.model.recompute import RECOMPUTE
from megatron_video.parallel.state import ParallelConfig, init_distributed

# SDPA kernels FlopCounterMode has formulas for: cuDNN on GPUs; on CPU the math kernel's matmuls
# (the CPU flash kernel has none), which count attention backward as 2x its forward.
COUNTING_BACKEND = {"cuda": "cudnn", "cpu": "math"}


def step_options(parser) -> None:
    parser.add_argument("--fp8", choices=["off", "native", "te"], default="off")
    parser.add_argument("--fp8-scaling", default="auto")
    parser.add_argument("--recompute", choices=RECOMPUTE, default="none")
    parser.add_argument("--attention-backend", choices=ATTENTION_BACKENDS, default="auto")
    parser.add_argument("--breakdown", action="store_true", help="split the step's GPU time (CUDA only)")


def training_step(preset: str, latent: tuple[int, int, int], dtype: torch.dtype, device: torch.device,
                  fp8: Fp8Settings, recompute: str = "none", attention_backend: str = "auto"):
    """(step function, model, model config): one forward + backward of one random sample;
    `step(backward=False)` runs the forward alone."""
    cfg = load_preset(preset, attention_backend=attention_backend)
    model = build_model(cfg, params_dtype=dtype, fp8=fp8, recompute=recompute).to(device)
    text_len = cfg.max_text_len
    x = torch.randn(1, cfg.in_channels, *latent, device=device, dtype=dtype)
    t = torch.rand(1, device=device)
    text = torch.randn(1, text_len, cfg.text_dim, device=device, dtype=dtype)
    mask = torch.ones(1, text_len, dtype=torch.bool, device=device)
    target = torch.randn_like(x)

    def step(backward: bool = True) -> None:
        loss = torch.nn.functional.mse_loss(model(x, t, text, mask).float(), target.float())
        if backward:
            loss.backward()
        model.zero_grad(set_to_none=True)

    return step, model, cfg


def step_setting(args) -> tuple[torch.device, str, tuple[int, int, int], torch.dtype, int]:
    """(device, preset, latent, dtype, repeats) of a one-sample step benchmark, with megatron's
    groups initialised; `--quick`: the demo model in float32 on the CPU."""
    device = torch.device("cuda" if torch.cuda.is_available() and not args.quick else "cpu")
    init_distributed(ParallelConfig(), device)
    if args.quick:
        return device, "demo", (4, 8, 14), torch.float32, 2
    return device, args.preset, tuple(args.latent), torch.bfloat16, args.repeats


@contextlib.contextmanager
def attention_backend_of(model: torch.nn.Module, backend: str):
    """Every attention layer of the model on `backend` inside the block."""
    layers = [m for m in model.modules() if isinstance(m, Attention)]
    saved = [m.backend for m in layers]
    for m in layers:
        m.backend = backend
    try:
        yield
    finally:
        for m, name in zip(layers, saved, strict=True):
            m.backend = name


def counted_flops(step, counting: contextlib.AbstractContextManager | None = None) -> float:
    """FLOPs of one call of step as torch's FlopCounterMode counts them, inside `counting` (the
    context that puts attention on a kernel the counter knows)."""
    with counting or contextlib.nullcontext(), FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


def attention_choices() -> list[dict]:
    """What the measured attention choice timed, per shape: milliseconds per kernel, refusals, pick."""
    return [{"q": list(key[1]), "k": list(key[2]), "masked": key[4], "grad": key[5], "chosen": name,
             "ms": {n: round(t * 1e3, 3) for n, t in MEASURED.timings.get(key, {}).items()},
             "rejected": MEASURED.rejected.get(key, {})} for key, name in MEASURED.table.items()]


def step_breakdown(step, cfg, latent: tuple[int, int, int], text_len: int, seconds: float) -> dict:
    """GPU kernel seconds of one step by category (attention, gemm, other), forward (a forward
    alone) and backward (the whole step's minus the forward's), the formula's TFLOP/s of attention
    and of the GEMMs in each, and the share of the step's wall time `seconds` no kernel ran."""
    fwd, whole = _gpu_time_split(functools.partial(step, backward=False)), _gpu_time_split(step)
    bwd = {k: round(whole[k] - fwd[k], 5) for k in whole}
    grid = patch_grid(latent, cfg.patch)
    attn = sum(attention_flops(cfg, grid, text_len, layer) for layer in range(cfg.layers))
    gemm = model_flops(cfg, (cfg.in_channels, *latent), text_len) / 3 - attn

    def rate(flops: float, s: float) -> float | None:
        return round(flops / s / 1e12, 1) if s > 0 else None

    return {"forward_s": fwd, "backward_s": bwd,
            "attention_tflops": {"forward": rate(attn, fwd["attention"]), "backward": rate(2 * attn, bwd["attention"])},
            "gemm_tflops": {"forward": rate(gemm, fwd["gemm"]), "backward": rate(2 * gemm, bwd["gemm"])},
            "attention_share": round(whole["attention"] / seconds, 4),
            "gpu_idle_share": round(max(0.0, 1 - sum(whole.values()) / seconds), 4)}


def main(argv: list[str] | None = None) -> pathlib.Path:
    args = model_benchmark_args(__doc__, argv, extra=step_options)
    device, preset, latent, dtype, repeats = step_setting(args)
    fp8 = Fp8Settings(args.fp8, args.fp8_scaling)
    step, model, cfg = training_step(preset, latent, dtype, device, fp8, args.recompute, args.attention_backend)
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    seconds = time_call(step, repeats=repeats, sync=sync)
    text_len = cfg.max_text_len
    flops = model_flops(cfg, (cfg.in_channels, *latent), text_len)
    counted = counted_flops(step, attention_backend_of(model, COUNTING_BACKEND[device.type]))
    tflops, counted_tflops = flops / seconds / 1e12, counted / seconds / 1e12
    peak = peak_tflops(device)
    mfu = tflops / peak if peak else 0.0
    tokens = latent[0] * latent[1] * latent[2] // (cfg.patch[0] * cfg.patch[1] * cfg.patch[2])
    metrics = {"mfu": round(mfu, 4), "tflops": round(tflops, 4), "step_s": round(seconds, 4),
               "flop_counter": {"flops_per_step": counted, "tflops": round(counted_tflops, 4),
                                "mfu": round(counted_tflops / peak, 4) if peak else 0.0,
                                "attention_counted_on": COUNTING_BACKEND[device.type]},
               "video_tokens": tokens, "text_tokens": text_len, "flops_per_step": flops,
               "params": sum(p.numel() for p in model.parameters()), "preset": preset,
               "dtype": str(dtype), "peak_tflops": peak, "fp8": args.fp8, "fp8_scaling": fp8.resolved_scaling,
               "recompute": args.recompute, "attention_backend": args.attention_backend,
               "attention_kernels": sorted(set(MEASURED.table.values())), "attention_choice": attention_choices(),
               "max_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None}
    if args.breakdown and device.type == "cuda":
        metrics["breakdown"] = step_breakdown(step, cfg, latent, text_len, seconds)
    return write_result("dit_step", metrics=metrics, baseline={"peak_tflops": peak}, ratio=mfu, target=0.55,
                        results_dir=args.results_dir)


if __name__ == "__main__":
    main()
