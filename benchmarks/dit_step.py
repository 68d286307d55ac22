"""dit_step: training-step throughput of the 1B VideoDiT at 32K video tokens, bf16, one GPU.

Forward + backward of one sample (latent 48 x 16 x 64 x 128 -> 32,768 video tokens after 1x2x2
patches, plus 512 text tokens). MFU against the GPU's dense bf16 peak, counted two ways for the same
step: the project's formula (model_flops: every matmul, attention backward as 2x its forward) is
the headline; torch's FlopCounterMode, which counts what the step dispatched (attention backward as
2.5x its forward, no custom kernels such as FlashAttention-4), is reported beside it. `--fp8`,
`--recompute` and `--attention-backend` select the throughput options; the attention kernels the
measured choice picked are listed. `--quick` runs a tiny model on the CPU to check the script end to end.
"""
from __future__ import annotations

import pathlib
import sys

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from benchmarks.common import model_benchmark_args, time_call, write_result
from megatron_video.model import build_model, load_preset, model_flops
from megatron_video.model.attention_choice import MEASURED
from megatron_video.model.config import ATTENTION_BACKENDS
from megatron_video.model.flops import peak_tflops
from megatron_video.model.fp8.settings import Fp8Settings
from megatron_video.model.recompute import RECOMPUTE
from megatron_video.parallel.state import ParallelConfig, init_distributed


def step_options(parser) -> None:
    parser.add_argument("--fp8", choices=["off", "native", "te"], default="off")
    parser.add_argument("--fp8-scaling", default="auto")
    parser.add_argument("--recompute", choices=RECOMPUTE, default="none")
    parser.add_argument("--attention-backend", choices=ATTENTION_BACKENDS, default="auto")


def training_step(preset: str, latent: tuple[int, int, int], dtype: torch.dtype, device: torch.device,
                  fp8: Fp8Settings, recompute: str = "none", attention_backend: str = "auto", compile: bool = False):
    """(step function, model, model config): one forward + backward of one random sample
    (through `torch.compile` of the model when `compile`)."""
    cfg = load_preset(preset, attention_backend=attention_backend)
    model = build_model(cfg, params_dtype=dtype, fp8=fp8, recompute=recompute).to(device)
    forward = torch.compile(model) if compile else model
    text_len = cfg.max_text_len
    x = torch.randn(1, cfg.in_channels, *latent, device=device, dtype=dtype)
    t = torch.rand(1, device=device)
    text = torch.randn(1, text_len, cfg.text_dim, device=device, dtype=dtype)
    mask = torch.ones(1, text_len, dtype=torch.bool, device=device)
    target = torch.randn_like(x)

    def step() -> None:
        loss = torch.nn.functional.mse_loss(forward(x, t, text, mask).float(), target.float())
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


def counted_flops(step) -> float:
    """FLOPs of one call of step as torch's FlopCounterMode counts them."""
    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


def main(argv: list[str] | None = None) -> pathlib.Path:
    args = model_benchmark_args(__doc__, argv, extra=step_options)
    device, preset, latent, dtype, repeats = step_setting(args)
    fp8 = Fp8Settings(args.fp8, args.fp8_scaling)
    step, model, cfg = training_step(preset, latent, dtype, device, fp8, args.recompute, args.attention_backend)
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    seconds = time_call(step, repeats=repeats, warmup=1, sync=sync)
    text_len = cfg.max_text_len
    flops = model_flops(cfg, (cfg.in_channels, *latent), text_len)
    counted = counted_flops(step)
    tflops, counted_tflops = flops / seconds / 1e12, counted / seconds / 1e12
    peak = peak_tflops(device)
    mfu = tflops / peak if peak else 0.0
    tokens = latent[0] * latent[1] * latent[2] // (cfg.patch[0] * cfg.patch[1] * cfg.patch[2])
    metrics = {"mfu": round(mfu, 4), "tflops": round(tflops, 4), "step_s": round(seconds, 4),
               "flop_counter": {"flops_per_step": counted, "tflops": round(counted_tflops, 4),
                                "mfu": round(counted_tflops / peak, 4) if peak else 0.0},
               "video_tokens": tokens, "text_tokens": text_len, "flops_per_step": flops,
               "params": sum(p.numel() for p in model.parameters()), "preset": preset,
               "dtype": str(dtype), "peak_tflops": peak, "fp8": args.fp8, "fp8_scaling": fp8.resolved_scaling,
               "recompute": args.recompute, "attention_backend": args.attention_backend,
               "attention_kernels": sorted(set(MEASURED.table.values())),
               "max_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None}
    return write_result("dit_step", metrics=metrics, baseline={"peak_tflops": peak}, ratio=mfu, target=0.55,
                        results_dir=args.results_dir)


if __name__ == "__main__":
    main()
