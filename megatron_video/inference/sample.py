"""`mvideo sample`: generate videos from prompts with a trained checkpoint."""
from __future__ import annotations

import logging
import pathlib
import re

import torch

from megatron_video.config.schema import RootConfig
from megatron_video.data.decode import to_uint8_frames
from megatron_video.diffusion.sampler import sample
from megatron_video.inference.video_io import write_mp4
from megatron_video.training import checkpoint as ckpt
from megatron_video.training.build import build_components, start_layout
from megatron_video.training.environment import resolve_device, seed_everything

log = logging.getLogger(__name__)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:60] or "empty"


@torch.no_grad()
def sample_videos(cfg: RootConfig) -> list[pathlib.Path]:
    """One mp4 per prompt in `sample.prompts`; returns their paths."""
    s = cfg.sample
    checkpoint = ckpt.resolve_checkpoint(s.checkpoint or cfg.run.output_dir)
    device = resolve_device(cfg.run.device)
    start_layout(cfg, device)
    seed_everything(cfg.run.seed if s.seed is None else s.seed)
    run_dir = pathlib.Path(cfg.run.output_dir)
    parts = build_components(cfg, device, run_dir)
    parts.model.load_state_dict(ckpt.load_checkpoint(checkpoint, device)["model"])
    parts.model.eval()
    codec = parts.codec
    shape = (codec.latent_channels, -(-s.frames // codec.temporal_factor),
             s.height // codec.spatial_factor, s.width // codec.spatial_factor)
    out_dir = pathlib.Path(s.output) if s.output else run_dir / "samples"
    null_text, null_mask = parts.text.encode([""])
    paths = []
    generator = torch.Generator(device).manual_seed(cfg.run.seed if s.seed is None else s.seed)
    for prompt in s.prompts:
        text, mask = parts.text.encode([prompt])
        latents = sample(parts.model, (1, *shape), text.to(device), mask.to(device),
                         null_text.to(device), null_mask.to(device), steps=s.steps,
                         guidance=s.guidance, solver=s.solver, generator=generator)
        video = codec.decode(latents)[0]
        path = write_mp4(to_uint8_frames(video), out_dir / f"{_slug(prompt)}.mp4", s.fps)
        log.info("sampled '%s' -> %s (%s from %s)", prompt, path, tuple(video.shape), checkpoint.name)
        paths.append(path)
    return paths
