"""Where each tensor-parallel rank's slice of a fused projection lives in the unsharded weight.

A fused projection stacks segments, e.g. W_in's output rows [q | k | v | g | u]. Megatron splits a
column-parallel weight into contiguous row blocks, so the weight is laid out rank by rank:
[q_0 k_0 v_0 g_0 u_0 | q_1 k_1 v_1 g_1 u_1 | ...], where q_r holds rank r's whole heads. This module
maps between that per-rank layout and the canonical (TP = 1) one, for checkpoint conversion and tests.
"""
from __future__ import annotations

import torch


def shard_index(segments: list[int], rank: int, world: int) -> torch.Tensor:
    """Indices into the canonical dimension of the rows/columns that `rank` holds, in its local order."""
    parts, start = [], 0
    for size in segments:
        if size % world:
            raise ValueError(f"segment of size {size} does not split over {world} tensor-parallel ranks")
        part = size // world
        parts.append(torch.arange(start + rank * part, start + (rank + 1) * part))
        start += size
    return torch.cat(parts)


def shard_canonical_state(state: dict[str, torch.Tensor], layout: dict[str, tuple[int, list[int]]],
                          rank: int, world: int) -> dict[str, torch.Tensor]:
    """The local state of `rank` from a canonical (TP = 1) state dict.

    `layout` maps each tensor-parallel parameter name to (partition dim, segments) as reported by
    `VideoDiT.tensor_parallel_layout()`; every other entry is replicated and copied as is.
    """
    local = {}
    for name, value in state.items():
        if name in layout:
            dim, segments = layout[name]
            value = value.index_select(dim, shard_index(segments, rank, world))
        local[name] = value.clone() if torch.is_tensor(value) else value  # megatron's _extra_state
    return local


def gather_canonical_grads(local_grads: list[dict[str, torch.Tensor]],
                           layout: dict[str, tuple[int, list[int]]]) -> dict[str, torch.Tensor]:
    """Reassemble canonical tensors from every rank's local ones (rank order), the inverse of sharding."""
    world = len(local_grads)
    out = {}
    for name, first in local_grads[0].items():
        if name not in layout:
            out[name] = first
            continue
        dim, segments = layout[name]
        shape = list(first.shape)
        shape[dim] = sum(segments)
        full = first.new_zeros(shape)
        for rank, grads in enumerate(local_grads):
            full.index_copy_(dim, shard_index(segments, rank, world), grads[name])
        out[name] = full
    return out
