"""The gated residual fused: out = x + (gate + c) * y, forward and backward.

x, y [S, B, H], gate [1, B, H] or [1, 1, H] (a chunk of the modulation output: any strides), c the constant
1/L offset. Eager PyTorch runs two full-size kernels and keeps an intermediate; here the forward is
one pass over tiles of rows, and the backward one pass writing dy = dout * (gate + c) while summing
dout * y over the rows of each sample for the gate's gradient (per-program partial sums, added up
by torch);
dx is dout itself. Reference: kernels/reference.py gated_residual.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.layouts import per_sample, same_shape
from kernels.rounding import cast_rtne
from kernels.tiles import TORCH_TO_TRITON, rows_per_program

ROWS_PER_REDUCTION = 64  # positions of one sample a backward program sums over
SUB_ROWS = 8  # positions per iteration of that sum
BLOCK_H = 1024


@triton.jit
def _forward(x, gate, y, out, n_rows, batch, hidden, gate_stride, offset, ROWS: tl.constexpr,
             BLOCK: tl.constexpr, DTYPE: tl.constexpr):
    """out = x + (gate + c) * y over a [ROWS, BLOCK] tile of the flat [S * B, H] rows."""
    row = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = (row < n_rows)[:, None] & (cols < hidden)[None, :]
    offsets = row[:, None] * hidden + cols[None, :]
    g = tl.load(gate + (row % batch)[:, None] * gate_stride + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    xv = tl.load(x + offsets, mask=mask, other=0.0).to(tl.float32)
    yv = tl.load(y + offsets, mask=mask, other=0.0).to(tl.float32)
    tl.store(out + offsets, cast_rtne(xv + (g + offset) * yv, DTYPE), mask=mask)


@triton.jit
def _backward(dout, gate, y, dy, dgate_part, seq, batch, hidden, gate_stride, offset, ROWS: tl.constexpr,
              SUB: tl.constexpr, BLOCK: tl.constexpr, DTYPE: tl.constexpr):
    """Program (tile of ROWS positions, sample b, column block): dy = dout * (gate + c) and
    dgate_part[tile, b] = the tile's sum of dout * y, SUB positions at a time."""
    tile = tl.program_id(0).to(tl.int64)
    b = tl.program_id(1).to(tl.int64)
    cols = tl.program_id(2) * BLOCK + tl.arange(0, BLOCK)
    cmask = cols < hidden
    g = tl.load(gate + b * gate_stride + cols, mask=cmask, other=0.0).to(tl.float32) + offset
    acc = tl.zeros([SUB, BLOCK], dtype=tl.float32)
    for start in range(0, ROWS, SUB):
        within = start + tl.arange(0, SUB)
        pos = tile * ROWS + within
        mask = ((pos < seq) & (within < ROWS))[:, None] & cmask[None, :]
        offsets = (pos * batch + b)[:, None] * hidden + cols[None, :]
        d = tl.load(dout + offsets, mask=mask, other=0.0).to(tl.float32)
        yv = tl.load(y + offsets, mask=mask, other=0.0).to(tl.float32)
        tl.store(dy + offsets, cast_rtne(d * g[None, :], DTYPE), mask=mask)
        acc += d * yv
    tl.store(dgate_part + (tile * batch + b) * hidden + cols, tl.sum(acc, axis=0), mask=cmask)


class _GatedResidual(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, gate, y, offset):
        same_shape(x, y=y)
        x, y = x.contiguous(), y.contiguous()
        seq, batch, hidden = x.shape
        gate_in, gate_stride = per_sample(gate, batch, hidden, "gate")
        out = torch.empty_like(x)
        block = min(BLOCK_H, triton.next_power_of_2(hidden))
        rows = rows_per_program(block)
        _forward[(triton.cdiv(seq * batch, rows), triton.cdiv(hidden, block))](
            x, gate_in, y, out, seq * batch, batch, hidden, gate_stride, offset, ROWS=rows, BLOCK=block,
            DTYPE=TORCH_TO_TRITON[x.dtype], num_warps=min(16, max(4, rows * block // 1024)))
        ctx.save_for_backward(gate_in, y)
        ctx.offset, ctx.gate_stride, ctx.gate_shape, ctx.gate_dtype = offset, gate_stride, gate.shape, gate.dtype
        return out

    @staticmethod
    def backward(ctx, dout):
        gate, y = ctx.saved_tensors
        dout = dout.contiguous()
        seq, batch, hidden = y.shape
        dy = torch.empty_like(y)
        tiles = triton.cdiv(seq, ROWS_PER_REDUCTION)
        part = torch.empty(tiles, batch, hidden, dtype=torch.float32, device=y.device)
        block = min(BLOCK_H, triton.next_power_of_2(hidden))
        sub = min(SUB_ROWS, ROWS_PER_REDUCTION)
        _backward[(tiles, batch, triton.cdiv(hidden, block))](
            dout, gate, y, dy, part, seq, batch, hidden, ctx.gate_stride, ctx.offset, ROWS=ROWS_PER_REDUCTION,
            SUB=sub, BLOCK=block, DTYPE=TORCH_TO_TRITON[y.dtype], num_warps=min(16, max(4, sub * block // 1024)))
        # A gate shared by every sample ([1, 1, H]) gets the sum over the samples.
        return dout, part.sum(0, keepdim=True).sum_to_size(ctx.gate_shape).to(ctx.gate_dtype), dy, None


def gated_residual(x: torch.Tensor, gate: torch.Tensor, y: torch.Tensor, offset: float) -> torch.Tensor:
    """x + (gate + offset) * y for x, y [S, B, H] and gate [1, B, H] or [1, 1, H] (one fused kernel)."""
    return _GatedResidual.apply(x, gate, y, offset)
