"""CachedTextEncoder: encode each prompt once, keep its states on disk and the recent ones in memory.

Keyed by sha256(encoder identity + prompt), so changing the encoder, its weights path or max_len
never serves stale states. Each entry is one small file written atomically (rename), safe to share
between data-loader workers. A training run asks for the same captions again every epoch (the
demo's 8 clips every other step): the entries it read last are kept in memory, least recently used
out first past `memory_bytes`, so a repeated caption costs neither a file read nor an unpickling.
"""
from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from pathlib import Path

import torch

from megatron_video.model.text.base import TextEncoder

# MiniLM's states of one prompt at max_len 32 are 48 KiB, UMT5's at 512 tokens 8 MiB.
DEFAULT_MEMORY_BYTES = 256 * 2**20


class CachedTextEncoder:
    def __init__(self, encoder: TextEncoder, cache_dir: str | Path, memory_bytes: int = DEFAULT_MEMORY_BYTES):
        self.encoder = encoder
        self.dim = encoder.dim
        self.identity = encoder.identity
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.misses = 0  # prompts actually sent to the encoder
        self.memory_bytes = memory_bytes
        self._memory: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()  # least recently used first
        self._held_bytes = 0

    def key(self, prompt: str) -> str:
        return hashlib.sha256(f"{self.identity}\n{prompt}".encode()).hexdigest()

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        keys = {prompt: self.key(prompt) for prompt in prompts}
        missing = sorted(p for p, key in keys.items() if key not in self._memory and not self._path(key).exists())
        if missing:
            self.misses += len(missing)
            states, masks = self.encoder.encode(missing)
            for prompt, state, mask in zip(missing, states, masks):
                path = self._path(keys[prompt])
                tmp = path.with_suffix(f".tmp{os.getpid()}")
                torch.save({"states": state.clone(), "mask": mask.clone()}, tmp)
                os.replace(tmp, path)
        entries = {key: self._entry(key) for key in dict.fromkeys(keys.values())}
        rows = [entries[keys[prompt]] for prompt in prompts]
        return torch.stack([e["states"] for e in rows]), torch.stack([e["mask"] for e in rows])

    def _path(self, key: str) -> Path:
        return self.cache_dir / f"{key}.pt"

    def _entry(self, key: str) -> dict[str, torch.Tensor]:
        """The entry from memory (now the most recently used), else from its file (then kept)."""
        entry = self._memory.get(key)
        if entry is not None:
            self._memory.move_to_end(key)
            return entry
        entry = torch.load(self._path(key), weights_only=True)
        size = sum(t.numel() * t.element_size() for t in entry.values())
        if size <= self.memory_bytes:
            self._memory[key] = entry
            self._held_bytes += size
            while self._held_bytes > self.memory_bytes:
                _, dropped = self._memory.popitem(last=False)
                self._held_bytes -= sum(t.numel() * t.element_size() for t in dropped.values())
        return entry
