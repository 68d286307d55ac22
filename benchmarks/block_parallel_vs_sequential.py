"""block_parallel_vs_sequential: inference latency of the parallel-block model vs the sequential one.

Same preset, same parameter count per block (the parallel block fuses attention and MLP into one
input and one output projection: two large GEMMs instead of four, one norm and modulation instead of
two). ratio = sequential latency / parallel latency; Summer-22B's claim is >= 1.25.
"""
from __future__ import annotations

import pathlib
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from benchmarks.common import model_benchmark_args, time_call, write_result  # noqa: E402
from megatron_video.model import build_model, load_preset  # noqa: E402
from megatron_video.parallel.state import ParallelConfig, init_distributed  # noqa: E402


def _latencies(preset: str, latent: tuple[int, ...], dtype: torch.dtype, device: torch.device,
               repeats: int) -> dict[str, float]:
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    latency = {}
    for block in ("parallel", "sequential"):
        cfg = load_preset(preset, block=block)
        model = build_model(cfg, params_dtype=dtype).to(device).eval()
        x = torch.randn(1, cfg.in_channels, *latent, device=device, dtype=dtype)
        t = torch.rand(1, device=device)
        text = torch.randn(1, cfg.max_text_len, cfg.text_dim, device=device, dtype=dtype)
        mask = torch.ones(1, cfg.max_text_len, dtype=torch.bool, device=device)
        with torch.no_grad():
            latency[block] = time_call(lambda m=model: m(x, t, text, mask), repeats=repeats, warmup=1, sync=sync)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return latency


def main(argv: list[str] | None = None) -> pathlib.Path:
    args = model_benchmark_args(__doc__, argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.quick else "cpu")
    init_distributed(ParallelConfig(), device)
    preset = "demo" if args.quick else args.preset
    latent = (4, 8, 14) if args.quick else tuple(args.latent)
    # A short sequence too: where attention no longer dominates, fusing the projections shows.
    short = (1, 4, 6) if args.quick else (4, 16, 32)
    dtype = torch.float32 if args.quick else torch.bfloat16
    repeats = 3 if args.quick else args.repeats
    latency = _latencies(preset, latent, dtype, device, repeats)
    short_latency = _latencies(preset, short, dtype, device, repeats)
    ratio = latency["sequential"] / latency["parallel"]
    metrics = {"parallel_s": round(latency["parallel"], 5), "preset": preset, "latent": list(latent),
               "dtype": str(dtype), "short_latent": list(short),
               "short_parallel_s": round(short_latency["parallel"], 5),
               "short_sequential_s": round(short_latency["sequential"], 5),
               "short_ratio": round(short_latency["sequential"] / short_latency["parallel"], 4)}
    return write_result("block_parallel_vs_sequential", metrics=metrics,
                        baseline={"sequential_s": round(latency["sequential"], 5)}, ratio=ratio, target=1.25,
                        results_dir=args.results_dir)


if __name__ == "__main__":
    main()
