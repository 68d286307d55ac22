"""Frames to a vision model's input, in torch: transformers' image and video processors import
torchvision (absent on CPU machines, see ENVIRONMENT.md), so post-curation passes prepare pixels
here, with the mean and std a checkpoint's preprocessor_config.json names."""
from __future__ import annotations

import json
import pathlib

import numpy as np
import torch

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def checkpoint_statistics(path: str | pathlib.Path, mean: list[float], std: list[float]) -> tuple[list, list]:
    """(image_mean, image_std) of a checkpoint folder; the given ones where it names none."""
    preprocessor = pathlib.Path(path) / "preprocessor_config.json"
    if preprocessor.is_file():
        settings = json.loads(preprocessor.read_text())
        return settings.get("image_mean", mean), settings.get("image_std", std)
    return mean, std


def normalised_frames(frames: np.ndarray, size: tuple[int, int], mean: list[float], std: list[float],
                      device: torch.device) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> float [T, 3, size] scaled to [0, 1], resized (bicubic, antialiased)
    and normalised by mean and std."""
    video = torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(0, 3, 1, 2).float() / 255
    video = torch.nn.functional.interpolate(video, size=size, mode="bicubic", antialias=True).clamp(0, 1)
    mean_t = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    return (video - mean_t) / torch.tensor(std, device=device).view(1, 3, 1, 1)
