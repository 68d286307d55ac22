"""Packing samples of mixed buckets into rows of a token budget (`data.packing`, `data.pack_tokens`).

Each row (one microbatch, model/packing.py) holds whole samples whose text + video tokens sum to at
most the budget; the model pads it to exactly the budget, so every row costs the same and
pipeline stages exchange one tensor size. First fit over the epoch's shuffled samples: a sample
goes to the first open row it fits in, so the order stays random while rows fill well. Which
parallel layouts packing works with is decided before any work (`check_packing`).
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from megatron_video.config import ConfigError
from megatron_video.data.buckets import Bucket


def token_packs(items: list[tuple[str, Bucket]], generator: torch.Generator, tokens: Callable[[Bucket], int],
                budget: int) -> list[list[str]]:
    """Rows of keys, each within `budget` tokens, in the order they were opened."""
    order = torch.randperm(len(items), generator=generator).tolist()
    rows: list[list[str]] = []
    free: list[int] = []
    for index in order:
        key, bucket = items[index]
        need = tokens(bucket)
        if need > budget:
            raise ConfigError("data.pack_tokens", f"{budget} is below the {need} tokens of one {bucket} sample")
        row = next((r for r, room in enumerate(free) if room >= need), None)
        if row is None:
            rows.append([])
            free.append(budget)
            row = len(rows) - 1
        rows[row].append(key)
        free[row] -= need
    return rows


def check_packing(context_mode: str, attention: str, device_type: str) -> None:
    """Refuse, naming the key, what packed rows are not built for. Attention stays inside each
    sample under Ulysses context parallelism (every rank attends whole rows for its heads), but the
    ring, USP and TE's CP exchange key masks only; tensor and sequence parallelism and pipelining
    work unchanged (rows are padded to their multiple). FlexAttention trains only on CUDA."""
    if context_mode not in ("none", "ulysses"):
        raise ConfigError("parallel.context_mode", f"{context_mode} cannot keep attention inside packed samples "
                                                   "(data.packing): use ulysses")
    if attention == "flex" and device_type != "cuda":
        raise ConfigError("model.packed_attention", "flex has no backward on CPU: use segments")
