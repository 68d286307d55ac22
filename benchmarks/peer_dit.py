"""peer_dit: the 1B VideoDiT's training step against a public DiT of the same width, same tokens, same GPU.

The peer is diffusers' `WanTransformer3DModel` in Wan 2.1 1.3B's configuration (width 1536, 30
layers, 12 heads of 128, FFN 8960, UMT5 text of 4096), randomly initialised: self-attention over the
video tokens, cross-attention to the text tokens, FFN, AdaLN. Both models get latents that make the
same number of video tokens (1x2x2 patches) and the same number of text tokens, in bf16, and run the
same step: forward, MSE against a random target, backward, gradients dropped; timed by the same
`time_call`. Both steps' FLOPs are counted by the same counter, torch's FlopCounterMode, on one step
whose attention runs on an SDPA kernel the counter has a formula for (cuDNN on GPUs, math on CPU):
the FLOPs do not depend on the kernel, and the counter sees no custom kernel (FlashAttention-4).

Each model runs in its best configuration among what it offers: ours eager with the measured
attention choice (the project does not torch.compile its model: benchmarks/notes.md, "Issue 22,
torch.compile"); the peer with each attention backend diffusers dispatches to that can run here
(SDPA with torch's own choice, cuDNN, flash, memory-efficient; FlashAttention-4 through diffusers'
`flash_4_hub` backend, its kernel given from the locally installed `flash_attn.cute` because the
Hub is unreachable), then `torch.compile` of the peer on its fastest. A variant that fails records
its error. ratio = our best counted TFLOP/s / the peer's best (target 1.3, issue 22), at the
headline latent; the same run repeats at a shorter latent (8K video tokens), the peer eager only.
`--no-compile` leaves the peer's compiled variant out (compiling it takes minutes). On CUDA, after
every timing, each model's eager step at the headline (the peer on its fastest eager backend) is
split into attention, GEMM and other kernel time (`gpu_s`).
`--quick`: the demo model and a tiny Wan on the CPU, float32, to check the script end to end.
"""
from __future__ import annotations

import argparse
import gc
import pathlib
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from benchmarks.block_parallel_vs_sequential import _gpu_time_split
from benchmarks.common import model_benchmark_args, time_call, write_result
from benchmarks.dit_step import (
    COUNTING_BACKEND,
    attention_backend_of,
    attention_choices,
    counted_flops,
    step_setting,
    training_step,
)
from megatron_video.model.attention_choice import flash_attention_4_available
from megatron_video.model.fp8.settings import FP8_OFF

# Wan 2.1 T2V 1.3B (its transformer/config.json).
WAN_1_3B = dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16,
                out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
                qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)
TINY_WAN = dict(WAN_1_3B, num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4, text_dim=24,
                freq_dim=16, ffn_dim=64, num_layers=2)
# diffusers' attention backends (AttentionBackendName values) worth timing, per device.
PEER_BACKENDS = {"cuda": ["native", "_native_cudnn", "_native_flash", "_native_efficient"],
                 "cpu": ["native", "_native_math"]}
PEER_COUNTING_BACKEND = {"cuda": "_native_cudnn", "cpu": "_native_math"}  # = COUNTING_BACKEND's kernels
FLASH_4 = "flash_4_hub"


def set_peer_attention(model: torch.nn.Module, backend: str) -> None:
    """Every attention processor of the peer on diffusers' `backend`. Set on the processors directly
    (what `set_attention_backend` does after its checks): for FlashAttention-4 its check asks for the
    `kernels` package that downloads the kernel from the Hub, which is unreachable, so the kernel is
    given from the installed `flash_attn.cute` instead."""
    from diffusers.models.attention_dispatch import _HUB_KERNELS_REGISTRY, AttentionBackendName

    name = AttentionBackendName(backend)
    if name == AttentionBackendName.FLASH_4_HUB:
        from flash_attn.cute import flash_attn_func

        _HUB_KERNELS_REGISTRY[name].kernel_fn = torch.compiler.disable(flash_attn_func)
    for module in model.modules():
        processor = getattr(module, "processor", None)
        if processor is not None and hasattr(processor, "_attention_backend"):
            processor._attention_backend = name


def peer_step(config: dict, latent: tuple[int, int, int], text_len: int, dtype: torch.dtype, device: torch.device):
    """(step, model): one training step of a randomly initialised Wan transformer, shaped like ours."""
    from diffusers import WanTransformer3DModel

    model = WanTransformer3DModel(**config).to(device)
    # As from_pretrained(torch_dtype=dtype) loads it: the modules Wan names stay in float32.
    keep = model._keep_in_fp32_modules or []
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_floating_point() and not any(part in keep for part in name.split(".")):
            tensor.data = tensor.data.to(dtype)
    x = torch.randn(1, config["in_channels"], *latent, device=device, dtype=dtype)
    t = torch.randint(0, 1000, (1,), device=device).float()
    text = torch.randn(1, text_len, config["text_dim"], device=device, dtype=dtype)
    target = torch.randn_like(x)
    state = {"forward": model}

    def step() -> None:
        out = state["forward"](x, t, text, return_dict=False)[0]
        torch.nn.functional.mse_loss(out.float(), target.float()).backward()
        model.zero_grad(set_to_none=True)

    step.state = state  # step.state["forward"] = torch.compile(model) switches the timed forward
    return step, model


def timed(step, repeats: int, sync, warmup: int = 1) -> dict:
    """{"step_s"} of one variant, or {"error"} when it does not run."""
    try:
        return {"step_s": float(f"{time_call(step, repeats=repeats, warmup=warmup, sync=sync):.4g}")}
    except Exception as err:  # noqa: BLE001  (a backend or compile failing here is a result, not a crash)
        return {"error": f"{type(err).__name__}: {err}"[:400]}


def add_rates(rows: dict[str, dict], flops: float) -> str | None:
    """Counted TFLOP/s into each row that ran; the fastest row's name (None when none ran)."""
    ran = {name: row for name, row in rows.items() if "step_s" in row}
    for row in ran.values():
        row["tflops"] = float(f"{flops / row['step_s'] / 1e12:.4g}")
    return min(ran, key=lambda n: ran[n]["step_s"]) if ran else None


def measure_ours(preset, latent, dtype, device, repeats, sync) -> dict:
    """Our step, eager."""
    step, model, cfg = training_step(preset, latent, dtype, device, FP8_OFF)
    rows = {"eager": timed(step, repeats, sync)}
    flops = counted_flops(step, attention_backend_of(model, COUNTING_BACKEND[device.type]))
    best = add_rates(rows, flops)
    del step, model
    gc.collect()
    return {"variants": rows, "best": best, "flops_per_step": flops, "text_tokens": cfg.max_text_len,
            "attention_choice": attention_choices()}


def measure_peer(config, latent, text_len, dtype, device, repeats, sync, compiled: bool) -> dict:
    step, model = peer_step(config, latent, text_len, dtype, device)
    set_peer_attention(model, PEER_COUNTING_BACKEND[device.type])
    flops = counted_flops(step)
    backends = list(PEER_BACKENDS[device.type])
    if device.type == "cuda" and flash_attention_4_available():
        backends.append(FLASH_4)
    rows = {}
    for backend in backends:
        try:
            set_peer_attention(model, backend)
        except Exception as err:  # noqa: BLE001
            rows[backend] = {"error": f"{type(err).__name__}: {err}"[:400]}
            continue
        rows[backend] = timed(step, repeats, sync)
    best_eager = best = add_rates(rows, flops)
    if compiled and best_eager is not None:
        set_peer_attention(model, best_eager)
        step.state["forward"] = torch.compile(model)
        rows[f"compiled_{best_eager}"] = timed(step, repeats, sync, warmup=2)
        best = add_rates(rows, flops)
    del step, model
    gc.collect()
    return {"variants": rows, "best": best, "best_eager": best_eager, "flops_per_step": flops}


def eager_gpu_split(step) -> dict[str, float]:
    """Kernel seconds of one eager step (after one to warm it) by attention / gemm / other."""
    step()
    return _gpu_time_split(step)


def gpu_splits(preset, wan, latent, text_len, dtype, device, peer_backend: str) -> dict[str, dict]:
    """Each model's eager step at `latent` split by kernel kind, the peer on `peer_backend`. Run after
    every timing: once used, the profiler slows op dispatch."""
    step, model, _ = training_step(preset, latent, dtype, device, FP8_OFF)
    splits = {"ours": eager_gpu_split(step)}
    del step, model
    step, model = peer_step(wan, latent, text_len, dtype, device)
    set_peer_attention(model, peer_backend)
    splits["peer"] = eager_gpu_split(step)
    return splits


def compile_option(parser) -> None:
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the peer under torch.compile at the headline latent (GPU)")


def main(argv: list[str] | None = None) -> pathlib.Path:
    args = model_benchmark_args(__doc__, argv, extra=compile_option)
    device, preset, headline, dtype, repeats = step_setting(args)
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    compiled = device.type == "cuda" and args.compile
    wan = WAN_1_3B if not args.quick else TINY_WAN
    # a quarter of the video tokens (at --quick: a shape the 2x2 patches divide)
    short = (2, 4, 8) if args.quick else (headline[0], headline[1] // 2, headline[2] // 2)
    points = []
    for latent in (short, headline):
        tokens = latent[0] * (latent[1] // 2) * (latent[2] // 2)
        at_headline = compiled and latent == headline
        ours = measure_ours(preset, latent, dtype, device, repeats, sync)
        peer = measure_peer(wan, latent, ours["text_tokens"], dtype, device, repeats, sync, compiled=at_headline)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        point = {"latent": list(latent), "video_tokens": tokens, "text_tokens": ours["text_tokens"],
                 "ours": ours, "peer": peer, "ratio": None}
        if ours["best"] and peer["best"]:
            best_rate = [side["variants"][side["best"]]["tflops"] for side in (ours, peer)]
            point["ratio"] = round(best_rate[0] / best_rate[1], 4)
        points.append(point)
    top = points[-1]
    ours, peer = top["ours"], top["peer"]
    if device.type == "cuda" and peer["best_eager"]:
        top["gpu_s"] = gpu_splits(preset, wan, headline, ours["text_tokens"], dtype, device, peer["best_eager"])
    metrics = {"tflops": ours["variants"][ours["best"]]["tflops"] if ours["best"] else None, "best": ours["best"],
               "preset": preset, "dtype": str(dtype), "counter": "torch.utils.flop_counter.FlopCounterMode",
               "attention_counted_on": COUNTING_BACKEND[device.type], "video_tokens": top["video_tokens"],
               "text_tokens": top["text_tokens"], "ours": ours, "gpu_s": top.get("gpu_s"),
               "sweep": points[:-1]}
    baseline = {"peer": "diffusers WanTransformer3DModel, Wan 2.1 1.3B config, random init"
                if not args.quick else "diffusers WanTransformer3DModel, tiny config",
                "tflops": peer["variants"][peer["best"]]["tflops"] if peer["best"] else None, **peer}
    return write_result("peer_dit", metrics=metrics, baseline=baseline, ratio=top["ratio"] or 0.0, target=1.3,
                        results_dir=args.results_dir)


if __name__ == "__main__":
    main()
