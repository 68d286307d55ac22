"""What the block kernels take as inputs, made so at their entry.

The kernels address their inputs through strides passed at launch, so any strides will do (views of
a larger buffer, storage offsets, permuted dimensions, stride 0) with one exception each states:
the last dimension must have unit stride. torch.compile's graphs may hand the kernels layouts eager
PyTorch does not (on the CPU: other strides for size-1 dimensions, benchmarks/notes.md), so the
kernels take nothing from shapes that the strides do not say, and copy an input only where its
last dimension is not contiguous. Triton specialises a launch on the actual pointers' 16-byte
alignment and on which integer arguments divide by 16, so its vector accesses follow what the
tensors are, not what they usually are.
"""
from __future__ import annotations

import torch


def unit_last_stride(t: torch.Tensor) -> torch.Tensor:
    """t itself when its last dimension is contiguous (or of one element), else a contiguous copy."""
    return t if t.stride(-1) == 1 or t.shape[-1] == 1 else t.contiguous()


def per_sample(t: torch.Tensor, batch: int, hidden: int, name: str) -> tuple[torch.Tensor, int]:
    """A modulation vector [1, B, H] (or [1, 1, H] shared by every sample) as the kernels read it:
    (t with unit column stride, its stride between samples; 0 when every sample reads the same row).
    The stride of a dimension of size 1 is arbitrary (a compiled graph may give any): never used."""
    if t.dim() != 3 or t.shape[0] != 1 or t.shape[1] not in (1, batch) or t.shape[2] != hidden:
        raise ValueError(f"{name} {tuple(t.shape)} must be [1, {batch}, {hidden}] or [1, 1, {hidden}]")
    t = unit_last_stride(t)
    return t, t.stride(1) if t.shape[1] > 1 else 0


def same_shape(reference: torch.Tensor, **others: torch.Tensor) -> None:
    """The kernels index every operand with one shape's bounds: a smaller operand would be overrun."""
    for name, t in others.items():
        if t.shape != reference.shape:
            raise ValueError(f"{name} {tuple(t.shape)} must have shape {tuple(reference.shape)}")


def dense_like(t: torch.Tensor, **kwargs) -> torch.Tensor:
    """An empty tensor of t's shape, dense in t's dimension order (a gradient then flows back into the
    projection t was split from without a copy) where that leaves the last dimension contiguous, as
    the kernels write it; contiguous otherwise. kwargs as torch.empty_like's (dtype, device)."""
    out = torch.empty_like(t, **kwargs)
    if out.stride(-1) == 1 or out.shape[-1] == 1:
        return out
    return torch.empty(t.shape, dtype=out.dtype, device=out.device)
