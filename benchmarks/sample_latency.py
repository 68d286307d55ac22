"""sample_latency: one video sampled with the 1B preset, and the server under a bounded load, one GPU.

1. Latency of an 81-frame 352x640 sample (Wan2.2 VAE latents: 48 x 21 x 22 x 40, 4,620 video tokens
   after 1x2x2 patches), 50 steps with classifier-free guidance (both branches in one batched
   forward), bf16 autocast, random weights; the baseline is 50 bare batched forwards of the same
   model, so the ratio (forwards / sampling) shows what the sampler itself costs.
2. `mvideo serve`'s app on loopback (real HTTP, uvicorn, SQLite queue), `--clients` closed-loop
   clients each submitting and polling until done, smaller requests (`--server-frames`,
   `--server-steps`); throughput, p50/p99 latency from submission to completed, 429 count.

The VAE is not in either figure (its weights are not on the benchmark machine): a stand-in codec
with the Wan2.2 VAE's shapes (48 channels, 16x spatial, 4x temporal) upsamples three latent
channels, so the server figure covers sampling, the stand-in decode and the mp4 encode (libx264).
Text states are hashed random vectors of the 1B preset's width and length. `--quick` runs a tiny
model on the CPU to check the script end to end.
"""
from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from benchmarks.common import time_call, write_result
from megatron_video.config.loader import load_config
from megatron_video.diffusion.flow_matching import FlowMatching
from megatron_video.inference.generator import GenerationRequest, VideoGenerator
from megatron_video.model import build_model, load_preset
from megatron_video.parallel.state import ParallelConfig, init_distributed
from megatron_video.testing.tiny import HashTextEncoder, tiny_components
from megatron_video.training.build import Components


class StandInCodec:
    """Wan2.2-VAE-shaped latents; decode upsamples three channels (no VAE weights here)."""

    latent_channels, spatial_factor, temporal_factor = 48, 16, 4

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("the benchmark only decodes")

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        rgb = latent[:, :3].float().tanh()
        frames = torch.cat([rgb[:, :, :1], rgb[:, :, 1:].repeat_interleave(self.temporal_factor, dim=2)], dim=2)
        return torch.nn.functional.interpolate(frames, scale_factor=(1, 16, 16), mode="nearest")

    def decode_chunks(self, latent: torch.Tensor, chunk: int) -> Iterator[torch.Tensor]:
        yield self.decode(latent).cpu()


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny model on CPU (smoke test)")
    parser.add_argument("--preset", default="1b")
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--height", type=int, default=352)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--guidance", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clients", type=int, default=4, help="closed-loop clients against the server")
    parser.add_argument("--requests", type=int, default=24, help="server requests in all")
    parser.add_argument("--server-frames", type=int, default=17)
    parser.add_argument("--server-steps", type=int, default=20)
    parser.add_argument("--skip-server", action="store_true", help="sampling latency only (no serve extra)")
    parser.add_argument("--results-dir", type=pathlib.Path, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.frames, args.height, args.width, args.steps, args.repeats = 3, 8, 8, 4, 2
        args.clients, args.requests, args.server_frames, args.server_steps = 2, 6, 2, 2
    return args


def build(args: argparse.Namespace, device: torch.device) -> VideoGenerator:
    if args.quick:
        return VideoGenerator(tiny_components(), device)
    cfg = load_preset(args.preset)
    torch.manual_seed(0)
    model = build_model(cfg).to(device).eval()
    parts = Components(chunks=[model], codec=StandInCodec(), text=HashTextEncoder(cfg.text_dim, cfg.max_text_len),
                       flow=FlowMatching())
    return VideoGenerator(parts, device, dtype=torch.bfloat16)


def sampling_latency(generator: VideoGenerator, args: argparse.Namespace, sync) -> tuple[dict, dict]:
    request = GenerationRequest(prompt="a red car drives along a coastal road at dusk", frames=args.frames,
                                height=args.height, width=args.width, steps=args.steps, guidance=args.guidance,
                                solver="euler", seed=0)
    latent = torch.randn(generator.latent_shape(request), device=generator.device)
    text, mask = generator.parts.text.encode([request.prompt, ""])
    text, mask = text.to(generator.device), mask.to(generator.device)
    times = torch.full((2,), 0.5, device=generator.device)

    def forwards() -> None:
        with torch.no_grad(), torch.autocast(generator.device.type, dtype=generator.dtype,
                                             enabled=generator.dtype != torch.float32):
            for _ in range(args.steps):
                generator.parts.model(torch.cat([latent, latent]), times, text, mask)

    sample_s = time_call(lambda: generator.latents(request), repeats=args.repeats, warmup=1, sync=sync)
    forwards_s = time_call(forwards, repeats=args.repeats, warmup=0, sync=sync)
    shape = generator.latent_shape(request)
    patch = generator.parts.model.cfg.patch
    tokens = shape[2] * shape[3] * shape[4] // (patch[0] * patch[1] * patch[2])
    metrics = {"sample_s": round(sample_s, 4), "step_s": round(sample_s / args.steps, 5), "frames": args.frames,
               "size": f"{args.width}x{args.height}", "steps": args.steps, "cfg": "batched", "video_tokens": tokens,
               "latent": list(shape[1:]), "dtype": str(generator.dtype), "vae_decode": "not included"}
    return metrics, {"bare_forwards_s": round(forwards_s, 4)}


def server_load(generator: VideoGenerator, args: argparse.Namespace, run_dir: pathlib.Path) -> dict:
    from megatron_video.inference.server.app import RequestRules  # the serve extra: fastapi, uvicorn
    from megatron_video.inference.server.launch import build_app
    from megatron_video.testing.live_server import LiveServer

    cfg = load_config("default", [f"run.output_dir={run_dir}", f"serve.max_queue={args.clients}",
                                  f"serve.max_frames={max(args.server_frames, args.frames)}",
                                  f"serve.max_steps={max(args.server_steps, args.steps)}"])
    codec, patch = generator.parts.codec, generator.parts.model.cfg.patch
    rules = RequestRules(limits=cfg.serve, defaults=GenerationRequest(prompt="", fps=24.0),
                         size_multiple=codec.spatial_factor * patch[1], temporal_factor=codec.temporal_factor)
    body = {"num_frames": args.server_frames, "height": args.height, "width": args.width,
            "num_inference_steps": args.server_steps, "guidance_scale": 1 + args.guidance}
    latencies, rejected = [], 0
    with LiveServer(build_app(cfg, generator, rules, "benchmark")) as server:
        def client(index: int) -> None:
            nonlocal rejected
            for n in range(index, args.requests, args.clients):
                started = time.perf_counter()
                code, job, _ = server.call("POST", "/v1/videos/generations", {**body, "prompt": f"clip {n}", "seed": n})
                while code == 429:
                    rejected += 1
                    time.sleep(0.05)
                    code, job, _ = server.call("POST", "/v1/videos/generations", {**body, "prompt": f"clip {n}"})
                assert code == 202, job
                server.wait_for(job["id"], "completed", timeout=3600)
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(client, range(args.clients)))
        wall = time.perf_counter() - started
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]
    return {"server_requests": len(latencies), "server_clients": args.clients,
            "server_throughput_per_min": round(60 * len(latencies) / wall, 3),
            "server_p50_s": round(statistics.median(latencies), 4), "server_p99_s": round(p99, 4),
            "server_rejected_429": rejected, "server_frames": args.server_frames,
            "server_steps": args.server_steps}


def main(argv: list[str] | None = None) -> pathlib.Path:
    import tempfile

    args = parse(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.quick else "cpu")
    init_distributed(ParallelConfig(), device)
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    generator = build(args, device)
    metrics, baseline = sampling_latency(generator, args, sync)
    if not args.skip_server:
        with tempfile.TemporaryDirectory() as run_dir:
            metrics.update(server_load(generator, args, pathlib.Path(run_dir)))
    metrics["preset"] = "tiny" if args.quick else args.preset
    return write_result("sample_latency", metrics=metrics, baseline=baseline,
                        ratio=baseline["bare_forwards_s"] / metrics["sample_s"],
                        target="latency and server p50/p99 reported (issue 27 names no figure)",
                        results_dir=args.results_dir)


if __name__ == "__main__":
    main()
