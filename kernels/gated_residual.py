"""The gated residual fused: out = x + (gate + c) * y, forward and backward.

x, y [S, B, H], gate [1, B, H] (a chunk of the modulation output: any row stride), c the constant
1/L offset. Eager PyTorch runs two full-size kernels and keeps an intermediate; here the forward is
one pass, and the backward one pass writing dy = dout * (gate + c) while summing dout * y over
the rows of each sample for the gate's gradient (per-program partial sums, added up by torch);
dx is dout itself. Reference: kernels/reference.py gated_residual.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.rounding import cast_rtne
from kernels.tiles import TORCH_TO_TRITON

ROWS_PER_REDUCTION = 64
BLOCK_H = 1024


@triton.jit
def _kernel(x, gate, y, out, dgate_part, seq, batch, hidden, gate_stride, offset, BACKWARD: tl.constexpr,
            ROWS: tl.constexpr, BLOCK: tl.constexpr, DTYPE: tl.constexpr):
    """Program (tile of ROWS positions, sample b, column block). Forward: out = x + (gate + c) * y.
    Backward (x holds dout): out = dout * (gate + c), dgate_part[tile, b] = sum of dout * y."""
    tile = tl.program_id(0).to(tl.int64)
    b = tl.program_id(1).to(tl.int64)
    cols = tl.program_id(2) * BLOCK + tl.arange(0, BLOCK)
    cmask = cols < hidden
    g = tl.load(gate + b * gate_stride + cols, mask=cmask, other=0.0).to(tl.float32) + offset
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for i in range(ROWS):
        s = tile * ROWS + i
        if s < seq:
            offsets = (s * batch + b) * hidden + cols
            xv = tl.load(x + offsets, mask=cmask, other=0.0).to(tl.float32)
            yv = tl.load(y + offsets, mask=cmask, other=0.0).to(tl.float32)
            if BACKWARD:
                tl.store(out + offsets, cast_rtne(xv * g, DTYPE), mask=cmask)
                acc += xv * yv
            else:
                tl.store(out + offsets, cast_rtne(xv + g * yv, DTYPE), mask=cmask)
    if BACKWARD:
        tl.store(dgate_part + (tile * batch + b) * hidden + cols, acc, mask=cmask)


def _launch(x, gate, y, offset, backward: bool):
    seq, batch, hidden = x.shape
    if gate.stride(2) != 1:
        raise ValueError("gate must be a [1, B, H] view with unit column stride")
    out = torch.empty_like(x)
    tiles = triton.cdiv(seq, ROWS_PER_REDUCTION)
    part = torch.empty(tiles if backward else 1, batch, hidden, dtype=torch.float32, device=x.device)
    block = min(BLOCK_H, triton.next_power_of_2(hidden))
    _kernel[(tiles, batch, triton.cdiv(hidden, block))](
        x, gate, y, out, part, seq, batch, hidden, gate.stride(1), offset, BACKWARD=backward,
        ROWS=ROWS_PER_REDUCTION, BLOCK=block, DTYPE=TORCH_TO_TRITON[x.dtype], num_warps=4)
    return out, part


class _GatedResidual(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, gate, y, offset):
        x, y = x.contiguous(), y.contiguous()
        out, _ = _launch(x, gate, y, offset, backward=False)
        ctx.save_for_backward(gate, y)
        ctx.offset = offset
        return out

    @staticmethod
    def backward(ctx, dout):
        gate, y = ctx.saved_tensors
        dout = dout.contiguous()
        dy, part = _launch(dout, gate, y, ctx.offset, backward=True)
        return dout, part.sum(0, keepdim=True).to(gate.dtype), dy, None


def gated_residual(x: torch.Tensor, gate: torch.Tensor, y: torch.Tensor, offset: float) -> torch.Tensor:
    """x + (gate + offset) * y for x, y [S, B, H] and gate [1, B, H] (one fused kernel)."""
    return _GatedResidual.apply(x, gate, y, offset)
