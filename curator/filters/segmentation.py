"""Foreground/background motion split through a segmentation model.

A `Segmenter` maps RGB frames to foreground masks; `split_flow_scores` measures the motion of
curator/filters/motion.py separately over the foreground and the background pixels, so a clip
whose subject moves before a still camera (foreground moves, background does not) is told apart
from a pan (both move alike) in the catalog.

The model is BiRefNet (dichotomous image segmentation; Zheng et al. 2024) from a local folder
(`curate.filters.segmentation_model`: a Hugging Face checkpoint with its remote code, e.g. a copy of
ZhengPeng7/BiRefNet), run through transformers on the stage's device. Without one (the default:
weights are not downloadable on every machine) no split is computed: the foreground and
background columns are null in the catalog and the motion class uses the whole frame. A folder
that is named but holds no checkpoint is refused before any work (the config's check).
"""
from __future__ import annotations

import pathlib
from typing import Protocol

import cv2
import numpy as np

from curator.filters.motion import flow_scores

BIREFNET_SIZE = (1024, 1024)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Segmenter(Protocol):
    def foreground(self, frames: np.ndarray) -> np.ndarray:
        """uint8 [T, H, W, 3] RGB -> float32 [T, H, W] foreground probability."""


class BiRefNetSegmenter:
    """BiRefNet from a local checkpoint folder (config.json + weights + its modelling code)."""

    def __init__(self, path: str, device: str = "cpu"):
        import torch
        from transformers import AutoModelForImageSegmentation

        if not (pathlib.Path(path) / "config.json").is_file():
            raise FileNotFoundError(f"no BiRefNet checkpoint (config.json) in {path}")
        self.torch, self.device = torch, torch.device(device)
        self.model = AutoModelForImageSegmentation.from_pretrained(path, trust_remote_code=True,
                                                                   local_files_only=True).to(self.device).eval()

    def foreground(self, frames: np.ndarray) -> np.ndarray:
        torch = self.torch
        h, w = frames.shape[1:3]
        video = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device).permute(0, 3, 1, 2).float() / 255
        video = torch.nn.functional.interpolate(video, size=BIREFNET_SIZE, mode="bilinear", antialias=True)
        mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)
        with torch.inference_mode():
            logits = self.model((video - mean) / std)[-1]  # BiRefNet returns its decoder's outputs, finest last
            masks = torch.nn.functional.interpolate(logits.float().sigmoid(), size=(h, w), mode="bilinear")
        return masks[:, 0].cpu().numpy()


def split_flow_scores(flows: np.ndarray, masks: np.ndarray, fps: float, level: float = 0.5) -> dict[str, float]:
    """Motion scores of the foreground (`masks` over `level`) and of the background, keyed
    foreground_motion_* and background_motion_*; masks [P, H, W] of each pair's first frame at any size."""
    h, w = flows.shape[1:3]
    fg = np.stack([cv2.resize(m.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR) > level for m in masks])
    scores = {}
    for side, mask in (("foreground", fg), ("background", ~fg)):
        scores.update({f"{side}_motion_{k}": v for k, v in flow_scores(flows, fps, mask).items()})
    return scores
