"""`mvideo sample`: generate videos from prompts with a trained checkpoint."""
from __future__ import annotations

import logging
import os
import pathlib
import re

import torch

from megatron_video.config.schema import RootConfig
from megatron_video.inference.generator import GenerationRequest, VideoGenerator
from megatron_video.inference.layout import validate_sampling_layout
from megatron_video.inference.video_io import write_mp4
from megatron_video.training.build import start_layout
from megatron_video.training.environment import cpu_training_threads, intra_op_threads, resolve_device

log = logging.getLogger(__name__)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:60] or "empty"


def requests_of(cfg: RootConfig) -> list[GenerationRequest]:
    """One request per prompt of `sample.prompts`, prompt i drawn from seed + i."""
    s = cfg.sample
    seed = cfg.run.seed if s.seed is None else s.seed
    return [GenerationRequest(prompt=prompt, negative_prompt=s.negative_prompt, frames=s.frames, height=s.height,
                              width=s.width, steps=s.steps, guidance=s.guidance, solver=s.solver, seed=seed + index,
                              shift=s.shift, fps=s.fps)
            for index, prompt in enumerate(s.prompts)]


def start_sampling(cfg: RootConfig) -> VideoGenerator:
    """Check the layout against the launched world (torchrun's WORLD_SIZE, else 1), start the process
    groups and load the generator."""
    validate_sampling_layout(cfg, int(os.environ.get("WORLD_SIZE", "1")))
    start_layout(cfg, resolve_device(cfg.run.device))
    return VideoGenerator.from_config(cfg)


def sampling_threads(cfg: RootConfig) -> int:
    """Torch intra-op threads to sample with: on the CPU, training's rule (train.cpu_threads where it
    is set, else this process's share of the cores), with no loader workers beside the sampler, so
    the demo, which samples in the process that trained, and `mvideo sample` under torchrun keep to
    their share; on a GPU, the process's own count."""
    if resolve_device(cfg.run.device).type != "cpu":
        return torch.get_num_threads()
    return cpu_training_threads(cfg.train.cpu_threads, loader_workers=0)


def sample_videos(cfg: RootConfig) -> list[pathlib.Path]:
    """One mp4 per prompt in `sample.prompts`, written by rank 0; returns their paths (none on
    the other ranks, which sample with it)."""
    with intra_op_threads(sampling_threads(cfg)):
        generator = start_sampling(cfg)
        out_dir = pathlib.Path(cfg.sample.output) if cfg.sample.output else pathlib.Path(cfg.run.output_dir) / "samples"
        paths = []
        for request in requests_of(cfg):
            frames = generator.generate(request)
            if frames is None:
                continue
            path = write_mp4(frames, out_dir / f"{_slug(request.prompt)}.mp4", request.fps)
            log.info("sampled '%s' -> %s (%s from %s)", request.prompt, path, frames.shape,
                     generator.checkpoint.name)
            paths.append(path)
    return paths
