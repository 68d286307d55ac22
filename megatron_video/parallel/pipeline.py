"""Pipeline stages: which layers a model chunk holds, and the one tensor that travels between stages.

megatron-core's schedules send one activation tensor [rows, micro batch, hidden] between stages.
VideoDiT's stages need two: the hidden state and the value residual's first-layer values. Both are
laid out as rows of `hidden` width and stacked along the first dimension; the next stage splits
them apart again. Reshapes only, so gradients flow back through the same layout.
"""
from __future__ import annotations

import torch


def stage_layers(layers: int, pipeline: int, chunks: int, pipeline_rank: int, chunk: int) -> range:
    """Global layer indices of model chunk `chunk` on pipeline rank `pipeline_rank`.

    megatron's interleaved order: chunk c of rank p is virtual stage c * pipeline + p, and virtual
    stages hold consecutive equal runs of layers.
    """
    per_stage = layers // (pipeline * chunks)
    first = (chunk * pipeline + pipeline_rank) * per_stage
    return range(first, first + per_stage)


def pack_rows(tensors: list[torch.Tensor], width: int) -> torch.Tensor:
    """[rows_i, B, ...] tensors -> one [sum of rows, B, width] tensor (each must fill whole rows)."""
    b = tensors[0].shape[1]
    return torch.cat([t.reshape(-1, b, width) for t in tensors], dim=0)


def unpack_rows(packed: torch.Tensor, shapes: list[tuple[int, ...]]) -> list[torch.Tensor]:
    """The inverse of pack_rows for tensors of the given shapes."""
    b, width = packed.shape[1], packed.shape[2]
    sizes = [int(torch.Size(shape).numel()) // (b * width) for shape in shapes]
    return [part.reshape(shape) for part, shape in zip(packed.split(sizes, dim=0), shapes, strict=True)]
