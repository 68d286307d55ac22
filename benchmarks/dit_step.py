"""dit_step: training-step throughput of the 1B VideoDiT at 32K video tokens, bf16, one GPU.

Forward + backward of one sample (latent 48 x 16 x 64 x 128 -> 32,768 video tokens after 1x2x2
patches, plus 512 text tokens), FLOPs from model_flops (attention included), MFU against the GPU's
dense bf16 peak. `--quick` runs a tiny model on the CPU to check the script end to end.
"""
from __future__ import annotations

import pathlib
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from benchmarks.common import model_benchmark_args, time_call, write_result
from megatron_video.model import build_model, load_preset, model_flops
from megatron_video.parallel.state import ParallelConfig, init_distributed

# Dense bf16 peak per GPU (TFLOP/s), by device name.
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "H800": 989.0, "B200": 2250.0, "A100": 312.0}


def peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_TFLOPS.items() if key in name), None)


def main(argv: list[str] | None = None) -> pathlib.Path:
    args = model_benchmark_args(__doc__, argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.quick else "cpu")
    init_distributed(ParallelConfig(), device)
    if args.quick:
        cfg, latent, dtype, repeats = load_preset("demo"), (4, 8, 14), torch.float32, 2
    else:
        cfg, latent, dtype, repeats = load_preset(args.preset), tuple(args.latent), torch.bfloat16, args.repeats
    model = build_model(cfg, params_dtype=dtype).to(device)
    text_len = cfg.max_text_len
    x = torch.randn(1, cfg.in_channels, *latent, device=device, dtype=dtype)
    t = torch.rand(1, device=device)
    text = torch.randn(1, text_len, cfg.text_dim, device=device, dtype=dtype)
    mask = torch.ones(1, text_len, dtype=torch.bool, device=device)
    target = torch.randn_like(x)

    def step() -> None:
        loss = torch.nn.functional.mse_loss(model(x, t, text, mask).float(), target.float())
        loss.backward()
        model.zero_grad(set_to_none=True)

    sync = torch.cuda.synchronize if device.type == "cuda" else None
    seconds = time_call(step, repeats=repeats, warmup=1, sync=sync)
    flops = model_flops(cfg, (cfg.in_channels, *latent), text_len)
    tflops = flops / seconds / 1e12
    peak = peak_tflops(device)
    mfu = tflops / peak if peak else 0.0
    tokens = latent[0] * latent[1] * latent[2] // (cfg.patch[0] * cfg.patch[1] * cfg.patch[2])
    metrics = {"mfu": round(mfu, 4), "tflops": round(tflops, 4), "step_s": round(seconds, 4),
               "video_tokens": tokens, "text_tokens": text_len, "flops_per_step": flops,
               "params": sum(p.numel() for p in model.parameters()), "preset": "demo" if args.quick else args.preset,
               "dtype": str(dtype), "peak_tflops": peak,
               "max_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None}
    return write_result("dit_step", metrics=metrics, baseline={"peak_tflops": peak}, ratio=mfu, target=0.4,
                        results_dir=args.results_dir)


if __name__ == "__main__":
    main()
