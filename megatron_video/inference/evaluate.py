"""`mvideo eval`: validation loss of a checkpoint at fixed timesteps and fixed noise seeds.

Training's validation loss draws its timesteps from the logit-normal; here every validation clip is
scored at each of `eval.timesteps` with the noise of (`eval.seed`, batch), so two checkpoints are
compared on identical inputs and the loss is broken down by noise level (high t: layout and motion,
low t: detail).
"""
from __future__ import annotations

import json
import logging
import pathlib
from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from megatron_video.training.build import Components

log = logging.getLogger(__name__)


@torch.no_grad()
def loss_by_timestep(parts: Components, batches: Iterable[dict], timesteps: list[float], seed: int,
                     dtype: torch.dtype = torch.float32) -> dict[float, float]:
    """Mean flow-matching loss at each timestep over `batches` ({"video", "caption"}); batch i is
    noised with the noise of seed (seed, i), the same at every timestep."""
    from megatron_video.training.objective import encode_batch

    model = parts.model.eval()
    device = next(model.parameters()).device
    sums = dict.fromkeys(timesteps, 0.0)
    count = 0
    for index, batch in enumerate(batches):
        latents, text, mask = encode_batch(parts, batch["video"].to(device), batch["caption"])
        noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(seed * 1_000_003 + index))
        noise = noise.to(device)
        for t in timesteps:
            times = torch.full((latents.shape[0],), float(t), device=device)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                pred = model(parts.flow.noised(latents, noise, times), times, text, mask)
            sums[t] += float(parts.flow.loss(pred, parts.flow.velocity_target(latents, noise)))
        count += 1
    if not count:
        raise RuntimeError("no validation clips: raise data.val_fraction or add footage")
    return {t: total / count for t, total in sums.items()}


def evaluate(cfg, generator=None) -> pathlib.Path:
    """Score `generator`'s model (default: `sample.checkpoint`, or the run's latest) on the `data`
    section's validation clips, and with VBench's `eval.vbench_dimensions` on videos of
    `sample.prompts`; write the results as JSON."""
    from megatron_video.data.dataset import build_loader
    from megatron_video.inference.generator import VideoGenerator
    from megatron_video.inference.vbench_eval import check_vbench
    from megatron_video.training.build import start_layout
    from megatron_video.training.environment import resolve_device

    vbench = check_vbench(cfg.eval.vbench_dimensions, cfg.eval.vbench_weights) if cfg.eval.vbench_dimensions else None
    if generator is None:
        start_layout(cfg, resolve_device(cfg.run.device))
        generator = VideoGenerator.from_config(cfg)
    loader = build_loader(cfg.data, "val", seed=cfg.run.seed, repeat=True)
    timesteps = [float(t) for t in cfg.eval.timesteps]
    losses = loss_by_timestep(generator.parts, (b for _, b in zip(range(cfg.eval.batches), loader)), timesteps,
                              cfg.eval.seed, generator.dtype)
    result = {"checkpoint": str(generator.checkpoint) if generator.checkpoint else None, "seed": cfg.eval.seed,
              "batches": cfg.eval.batches,
              "loss_by_timestep": {str(t): loss for t, loss in losses.items()},
              "mean_loss": sum(losses.values()) / len(losses)}
    path = pathlib.Path(cfg.eval.output or pathlib.Path(cfg.run.output_dir) / "eval" / "val_loss.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    if vbench is not None:
        result["vbench"] = vbench_scores(cfg, generator, vbench, path.parent / "vbench")
    path.write_text(json.dumps(result, indent=2))
    log.info("validation loss of %s: mean %.5f; by timestep %s -> %s", result["checkpoint"],
             result["mean_loss"], {t: round(v, 5) for t, v in losses.items()}, path)
    return path


def vbench_scores(cfg, generator, vbench, out_dir: pathlib.Path) -> dict:
    """VBench's scores of `eval.vbench_videos_per_prompt` videos of each of `sample.prompts`."""
    from megatron_video.inference.sample import requests_of
    from megatron_video.inference.vbench_eval import run_vbench, write_vbench_videos

    videos = out_dir / "videos"
    prompts = write_vbench_videos(generator, requests_of(cfg), cfg.eval.vbench_videos_per_prompt, videos)
    return run_vbench(vbench, videos, prompts, list(cfg.eval.vbench_dimensions), out_dir, generator.device)
