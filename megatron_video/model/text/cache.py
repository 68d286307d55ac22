"""CachedTextEncoder: encode each prompt once, keep its states on disk.

Keyed by sha256(encoder identity + prompt), so changing the encoder, its weights path or max_len
never serves stale states. Each entry is one small file written atomically (rename), safe to share
between data-loader workers.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from megatron_video.model.text.base import TextEncoder


class CachedTextEncoder:
    def __init__(self, encoder: TextEncoder, cache_dir: str | Path):
        self.encoder = encoder
        self.dim = encoder.dim
        self.identity = encoder.identity
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.misses = 0  # prompts actually sent to the encoder

    def key(self, prompt: str) -> str:
        return hashlib.sha256(f"{self.identity}\n{prompt}".encode()).hexdigest()

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        paths = [self.cache_dir / f"{self.key(p)}.pt" for p in prompts]
        missing = sorted({p for p, path in zip(prompts, paths) if not path.exists()})
        if missing:
            self.misses += len(missing)
            states, masks = self.encoder.encode(missing)
            for prompt, state, mask in zip(missing, states, masks):
                path = self.cache_dir / f"{self.key(prompt)}.pt"
                tmp = path.with_suffix(f".tmp{os.getpid()}")
                torch.save({"states": state.clone(), "mask": mask.clone()}, tmp)
                os.replace(tmp, path)
        entries = [torch.load(path, weights_only=True) for path in paths]
        return torch.stack([e["states"] for e in entries]), torch.stack([e["mask"] for e in entries])
