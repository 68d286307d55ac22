"""block_parallel_vs_sequential: inference latency of the parallel-block model vs the sequential one.

Same preset, same parameter count per block (the parallel block fuses attention and MLP into one
input and one output projection: two large GEMMs instead of four, one norm and modulation instead of
two). ratio = sequential latency / parallel latency at the headline latent; Summer-22B's claim is
about 20% lower latency, i.e. a ratio of 1.25.

Both variants run the same attention FLOPs, so what fusion can save shrinks as attention's share
grows with the sequence. To show where the claim holds, the same run sweeps shorter latents and, on
CUDA, splits each variant's GPU time into attention kernels, GEMMs and the rest (torch.profiler,
one forward each). `ceiling` is the ratio the parallel model would reach if everything but its
attention kernels took no time at all: sequential latency / parallel attention time.
"""
from __future__ import annotations

import functools
import pathlib
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from benchmarks.common import model_benchmark_args, time_call, write_result
from megatron_video.model import build_model, load_preset
from megatron_video.parallel.state import ParallelConfig, init_distributed

# Kernel-name fragments, attention first: cutlass attention kernels also contain "cutlass".
ATTENTION_KERNELS = ("flash", "fmha", "sdpa", "attention", "attn")
GEMM_KERNELS = ("gemm", "nvjet", "xmma", "cublas", "cutlass")


def kernel_category(name: str) -> str:
    lowered = name.lower()
    if any(k in lowered for k in ATTENTION_KERNELS):
        return "attention"
    if any(k in lowered for k in GEMM_KERNELS):
        return "gemm"
    return "other"


def _gpu_time_split(fn) -> dict[str, float]:
    """Seconds of GPU kernel time per category over one call of fn."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    split = {"attention": 0.0, "gemm": 0.0, "other": 0.0}
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            split[kernel_category(event.name)] += event.device_time_total * 1e-6
    return {k: round(v, 5) for k, v in split.items()}


def _measure(preset: str, latents: list[tuple[int, ...]], dtype: torch.dtype, device: torch.device,
             repeats: int) -> dict[str, list[dict]]:
    """Per variant and latent: latency, and on CUDA the kernel-time split. Every latency is timed
    before the profiler first runs: once used, it slows op dispatch, which launch-bound short
    sequences would show as latency."""
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    forwards: dict[str, list] = {}
    for block in ("parallel", "sequential"):
        cfg = load_preset(preset, block=block)
        model = build_model(cfg, params_dtype=dtype).to(device).eval()
        t = torch.rand(1, device=device)
        text = torch.randn(1, cfg.max_text_len, cfg.text_dim, device=device, dtype=dtype)
        mask = torch.ones(1, cfg.max_text_len, dtype=torch.bool, device=device)
        forwards[block] = [functools.partial(model, torch.randn(1, cfg.in_channels, *latent, device=device,
                                                                dtype=dtype), t, text, mask)
                           for latent in latents]
    rows: dict[str, list[dict]] = {block: [] for block in forwards}
    with torch.no_grad():
        for block, calls in forwards.items():
            for latent, forward in zip(latents, calls):
                rows[block].append({"latent": list(latent),
                                    "seconds": time_call(forward, repeats=repeats, warmup=1, sync=sync)})
        if device.type == "cuda":
            for block, calls in forwards.items():
                for row, forward in zip(rows[block], calls):
                    row["gpu_seconds"] = _gpu_time_split(forward)
    return rows


def main(argv: list[str] | None = None) -> pathlib.Path:
    args = model_benchmark_args(__doc__, argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.quick else "cpu")
    init_distributed(ParallelConfig(), device)
    preset = "demo" if args.quick else args.preset
    headline = (4, 8, 14) if args.quick else tuple(args.latent)
    # Shorter sequences first (512 and 4K video tokens at the default 1x2x2 patch), headline last.
    sweep = [(1, 4, 6), headline] if args.quick else [(4, 16, 32), (8, 32, 64), headline]
    dtype = torch.float32 if args.quick else torch.bfloat16
    repeats = 3 if args.quick else args.repeats
    rows = _measure(preset, sweep, dtype, device, repeats)
    points = []
    for par, seq in zip(rows["parallel"], rows["sequential"]):
        point = {"latent": par["latent"], "parallel_s": round(par["seconds"], 5),
                 "sequential_s": round(seq["seconds"], 5), "ratio": round(seq["seconds"] / par["seconds"], 4)}
        if "gpu_seconds" in par:
            point.update(parallel_gpu_s=par["gpu_seconds"], sequential_gpu_s=seq["gpu_seconds"],
                         ceiling=round(seq["seconds"] / max(par["gpu_seconds"]["attention"], 1e-9), 3))
        points.append(point)
    top = points[-1]
    metrics = {"parallel_s": top["parallel_s"], "preset": preset, "latent": list(headline), "dtype": str(dtype),
               "sweep": points}
    if "ceiling" in top:
        metrics["ceiling"] = top["ceiling"]
    return write_result("block_parallel_vs_sequential", metrics=metrics,
                        baseline={"sequential_s": top["sequential_s"]}, ratio=top["ratio"], target=1.25,
                        results_dir=args.results_dir)


if __name__ == "__main__":
    main()
