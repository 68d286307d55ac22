"""block_kernels: the fused DiT block operations against eager PyTorch and torch.compile.

Each operation of kernels/ (AdaLN modulation, RoPE on q and k, the SiLU gate alone and written into
the parallel block's [attention | MLP] buffer, the gated residual, the value-residual mix) runs at
the 1B preset's shapes (32K video tokens, hidden 1536, 12 heads of 128, gated MLP 6144, bf16,
inputs strided as the block passes them) three ways in one run: the Triton kernels, its PyTorch
reference (kernels/reference.py) eager, and torch.compile of that reference; forward alone and
forward + backward. Then the 1B preset's forward at the headline latent with the fused block ops
off and on, its GPU time split into attention kernels, GEMMs and the rest
(block_parallel_vs_sequential's profiler split).

Targets (issue 21): every op >= 1.3x torch.compile (forward + backward), and the forward's "other"
time down by >= 40%. ratio = the smallest op speedup over torch.compile (forward + backward).
"""
from __future__ import annotations

import functools
import os
import pathlib
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from benchmarks.common import model_benchmark_args, time_call, write_result

SEQ, HIDDEN, HEADS, MLP = 32768, 1536, 12, 6144


def op_cases(seq: int, hidden: int, heads: int, mlp: int, device: torch.device, dtype: torch.dtype) -> dict:
    """{op: (kernel module, inputs, non-differentiable input positions, extra args)} at these sizes."""
    gen = torch.Generator(device=device).manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, device=device, dtype=dtype)

    x, y = randn(seq, 1, hidden), randn(seq, 1, hidden)
    shift, scale, gate = (m[None] for m in randn(1, 3 * hidden).chunk(3, dim=-1))
    q, k, v, g, u = randn(seq, 1, 3 * hidden + 2 * mlp).split([hidden] * 3 + [mlp] * 2, dim=-1)

    def heads_of(t):
        return t.reshape(seq, 1, heads, hidden // heads).permute(1, 2, 0, 3)

    angles = torch.rand(seq, hidden // heads // 2, generator=gen, device=device) * 100
    lambdas = torch.full((2,), 0.5, device=device, dtype=dtype)
    return {"adaln_modulate": ("kernels.adaln", [x, shift, scale], (), (1e-6,)),
            "rope_qk": ("kernels.rope", [heads_of(q), heads_of(k), angles], (2,), ()),
            "silu_gate": ("kernels.silu_gate", [g, u], (), ()),
            "concat_silu_gate": ("kernels.silu_gate", [x, g, u], (), ()),
            "gated_residual": ("kernels.gated_residual", [x, gate, y], (), (1 / 21,)),
            "value_mix": ("kernels.value_mix", [heads_of(v), heads_of(q), lambdas], (), ())}


def _runner(fn, inputs: list, constants: tuple, extra: tuple, backward: bool):
    leaves = [t.detach().requires_grad_(backward and i not in constants) for i, t in enumerate(inputs)]
    outs = fn(*leaves, *extra)
    outs = outs if isinstance(outs, tuple) else (outs,)
    grads = [torch.ones_like(o) for o in outs]

    def run():
        result = fn(*leaves, *extra)
        if backward:
            torch.autograd.backward(list(result if isinstance(result, tuple) else (result,)), grads)
    return run


def measure_ops(device: torch.device, dtype: torch.dtype, sizes: tuple, repeats: int, compiled: bool) -> dict:
    import importlib

    from kernels import reference

    sync = torch.cuda.synchronize if device.type == "cuda" else None
    rows = {}
    for name, (module, inputs, constants, extra) in op_cases(*sizes, device, dtype).items():
        impls = {"fused": getattr(importlib.import_module(module), name), "eager": getattr(reference, name)}
        if compiled:
            impls["compile"] = torch.compile(getattr(reference, name))
        row = {}
        for impl, fn in impls.items():
            for backward in (False, True):
                run = _runner(fn, inputs, constants, extra, backward)
                key = f"{impl}_{'fwd_bwd' if backward else 'fwd'}_ms"
                try:  # a baseline torch.compile cannot build is recorded, not fatal
                    row[key] = round(1e3 * time_call(run, repeats=repeats, warmup=2, sync=sync), 4)
                except Exception as exc:
                    if impl != "compile":
                        raise
                    row[f"{key.removesuffix('_ms')}_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        for base in ("eager", "compile"):
            for phase in ("fwd", "fwd_bwd"):
                if f"{base}_{phase}_ms" in row:
                    row[f"speedup_vs_{base}_{phase}"] = round(row[f"{base}_{phase}_ms"] / row[f"fused_{phase}_ms"], 3)
        rows[name] = row
    return rows


def forward_split(preset: str, latent: tuple, device: torch.device, repeats: int) -> dict:
    """The preset's bf16 forward with the fused block ops off and on: latency and GPU time split."""
    from benchmarks.block_parallel_vs_sequential import _gpu_time_split
    from megatron_video.model import build_model, load_preset

    cfg = load_preset(preset)
    model = build_model(cfg, params_dtype=torch.bfloat16).to(device).eval()
    t = torch.rand(1, device=device)
    text = torch.randn(1, cfg.max_text_len, cfg.text_dim, device=device, dtype=torch.bfloat16)
    mask = torch.ones(1, cfg.max_text_len, dtype=torch.bool, device=device)
    forward = functools.partial(model, torch.randn(1, cfg.in_channels, *latent, device=device,
                                                   dtype=torch.bfloat16), t, text, mask)
    result = {}
    with torch.no_grad():
        for fused in (False, True):
            for block in model.blocks:
                block.fused = fused
            label = "fused" if fused else "eager"
            result[f"{label}_s"] = round(time_call(forward, repeats=repeats, warmup=1,
                                                   sync=torch.cuda.synchronize), 5)
        for fused in (False, True):  # profiled after every latency (the profiler slows dispatch)
            for block in model.blocks:
                block.fused = fused
            result[f"{'fused' if fused else 'eager'}_gpu_s"] = _gpu_time_split(forward)
    return result


def main(argv: list[str] | None = None) -> pathlib.Path:
    args = model_benchmark_args(__doc__, argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.quick else "cpu")
    if device.type == "cpu":  # read when triton is first imported (megatron-core imports it too)
        os.environ.setdefault("TRITON_INTERPRET", "1")
    if args.quick:  # tiny odd sizes, interpreted kernels, no torch.compile, no model split
        rows = measure_ops(device, torch.float32, (37, 48, 4, 80), repeats=1, compiled=False)
        metrics = {"ops": rows, "sizes": [37, 48, 4, 80]}
        ratio = min(r["speedup_vs_eager_fwd_bwd"] for r in rows.values())
    else:
        from megatron_video.parallel.state import ParallelConfig, init_distributed

        init_distributed(ParallelConfig(), device)
        rows = measure_ops(device, torch.bfloat16, (SEQ, HIDDEN, HEADS, MLP), args.repeats, compiled=True)
        split = forward_split(args.preset, tuple(args.latent), device, args.repeats)
        other_cut = 1 - split["fused_gpu_s"]["other"] / split["eager_gpu_s"]["other"]
        metrics = {"ops": rows, "sizes": [SEQ, HIDDEN, HEADS, MLP], "preset": args.preset, "latent": args.latent,
                   "forward_fused_s": split["fused_s"], "forward_fused_gpu_s": split["fused_gpu_s"],
                   "other_time_reduction": round(other_cut, 4)}
        ratio = min((r["speedup_vs_compile_fwd_bwd"] for r in rows.values() if "speedup_vs_compile_fwd_bwd" in r),
                    default=None)
    baseline = {"forward_eager_s": split["eager_s"], "forward_eager_gpu_s": split["eager_gpu_s"]} \
        if not args.quick else {}
    return write_result("block_kernels", metrics=metrics, baseline=baseline, ratio=ratio,
                        target=">= 1.3x torch.compile per op; forward 'other' time -40%",
                        results_dir=args.results_dir)


if __name__ == "__main__":
    main()
