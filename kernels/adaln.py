"""LayerNorm + AdaLN modulation fused: y = LN(x) * (1 + scale) + shift, forward and backward.

x [S, B, H] (rows r = s * B + b), shift and scale [1, B, H] or [1, 1, H] (any strides between
samples, each its own: chunks of the modulation output, or one vector for every sample). The
forward reads x once and writes y, keeping each row's mean and 1/std; the backward recomputes
the normalised rows from them and writes dx, a few rows per step, while each program sums
dy * xhat and dy over its rows of one sample for the scale and shift gradients (per-program
partial sums, added up by torch). Reference: kernels/reference.py adaln_modulate.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.layouts import per_sample
from kernels.rounding import cast_rtne
from kernels.tiles import TORCH_TO_TRITON, rows_per_program

ROWS_PER_REDUCTION = 64  # rows of one sample a backward program walks (partial-sum granularity)
SUB_ROWS = 4  # of those, rows per step


@triton.jit
def _forward(x, shift, scale, y, mean_out, rstd_out, n_rows, batch, hidden, shift_stride, scale_stride, eps,
             ROWS: tl.constexpr, BLOCK: tl.constexpr, DTYPE: tl.constexpr):
    row = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    valid = row < n_rows
    cols = tl.arange(0, BLOCK)
    mask = valid[:, None] & (cols[None, :] < hidden)
    offsets = row[:, None] * hidden + cols[None, :]
    xv = tl.load(x + offsets, mask=mask, other=0.0).to(tl.float32)
    mean = tl.sum(xv, axis=1) / hidden
    centred = tl.where(mask, xv - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(centred * centred, axis=1) / hidden + eps)
    sample = (row % batch)[:, None]
    sc = tl.load(scale + sample * scale_stride + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    sh = tl.load(shift + sample * shift_stride + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    tl.store(y + offsets, cast_rtne(centred * rstd[:, None] * (1.0 + sc) + sh, DTYPE), mask=mask)
    tl.store(mean_out + row, mean, mask=valid)
    tl.store(rstd_out + row, rstd, mask=valid)


@triton.jit
def _backward(dy, x, scale, mean_in, rstd_in, dx, dscale_part, dshift_part, seq, batch, hidden, scale_stride,
              ROWS: tl.constexpr, SUB: tl.constexpr, BLOCK: tl.constexpr, DTYPE: tl.constexpr):
    """Program (tile of ROWS sequence positions, sample b): dx for those rows, SUB rows at a time
    (each row's two reductions side by side, SUB rows of loads in flight), and the partial sums of
    dy * xhat and dy into dscale_part / dshift_part [tiles, B, H]."""
    tile = tl.program_id(0).to(tl.int64)
    b = tl.program_id(1).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    cmask = cols < hidden
    sc = 1.0 + tl.load(scale + b * scale_stride + cols, mask=cmask, other=0.0).to(tl.float32)
    acc_scale = tl.zeros([SUB, BLOCK], dtype=tl.float32)
    acc_shift = tl.zeros([SUB, BLOCK], dtype=tl.float32)
    for start in range(0, ROWS, SUB):
        within = start + tl.arange(0, SUB)
        pos = tile * ROWS + within
        valid = (pos < seq) & (within < ROWS)
        row = pos * batch + b
        mask = valid[:, None] & cmask[None, :]
        offsets = row[:, None] * hidden + cols[None, :]
        g = tl.load(dy + offsets, mask=mask, other=0.0).to(tl.float32)
        xv = tl.load(x + offsets, mask=mask, other=0.0).to(tl.float32)
        mean = tl.load(mean_in + row, mask=valid, other=0.0)
        rstd = tl.load(rstd_in + row, mask=valid, other=0.0)
        xhat = tl.where(mask, (xv - mean[:, None]) * rstd[:, None], 0.0)
        dxhat = g * sc[None, :]
        c1 = tl.sum(dxhat * xhat, axis=1) / hidden
        c2 = tl.sum(dxhat, axis=1) / hidden
        tl.store(dx + offsets, cast_rtne((dxhat - xhat * c1[:, None] - c2[:, None]) * rstd[:, None], DTYPE),
                 mask=mask)
        acc_scale += g * xhat
        acc_shift += g
    part = (tile * batch + b) * hidden + cols
    tl.store(dscale_part + part, tl.sum(acc_scale, axis=0), mask=cmask)
    tl.store(dshift_part + part, tl.sum(acc_shift, axis=0), mask=cmask)


class _AdaLNModulate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, shift, scale, eps):
        x = x.contiguous()
        seq, batch, hidden = x.shape
        shift_in, shift_stride = per_sample(shift, batch, hidden, "shift")
        scale_in, scale_stride = per_sample(scale, batch, hidden, "scale")
        block = triton.next_power_of_2(hidden)
        rows = rows_per_program(block)
        y = torch.empty_like(x)
        mean = torch.empty(seq * batch, dtype=torch.float32, device=x.device)
        rstd = torch.empty_like(mean)
        _forward[(triton.cdiv(seq * batch, rows),)](
            x, shift_in, scale_in, y, mean, rstd, seq * batch, batch, hidden, shift_stride, scale_stride, eps,
            ROWS=rows, BLOCK=block, DTYPE=TORCH_TO_TRITON[x.dtype], num_warps=min(16, max(4, rows * block // 1024)))
        ctx.save_for_backward(x, scale_in, mean, rstd)
        ctx.scale_stride = scale_stride
        ctx.vectors = [(t.shape, t.dtype) for t in (shift, scale)]
        return y

    @staticmethod
    def backward(ctx, dy):
        x, scale, mean, rstd = ctx.saved_tensors
        seq, batch, hidden = x.shape
        block = triton.next_power_of_2(hidden)
        tiles = triton.cdiv(seq, ROWS_PER_REDUCTION)
        sub = min(SUB_ROWS, triton.next_power_of_2(min(ROWS_PER_REDUCTION, seq)))  # per-row modulation: seq 1
        dx = torch.empty_like(x)
        dscale = torch.empty(tiles, batch, hidden, dtype=torch.float32, device=x.device)
        dshift = torch.empty_like(dscale)
        _backward[(tiles, batch)](dy.contiguous(), x, scale, mean, rstd, dx, dscale, dshift, seq, batch, hidden,
                                  ctx.scale_stride, ROWS=ROWS_PER_REDUCTION, SUB=sub, BLOCK=block,
                                  DTYPE=TORCH_TO_TRITON[x.dtype], num_warps=min(16, max(4, sub * block // 1024)))
        # A vector shared by every sample ([1, 1, H]) gets the sum over the samples.
        grads = [part.sum(0, keepdim=True).sum_to_size(shape).to(dtype)
                 for part, (shape, dtype) in zip((dshift, dscale), ctx.vectors)]
        return dx, *grads, None


def adaln_modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:
    """LN(x) * (1 + scale) + shift for x [S, B, H], shift and scale [1, B, H] or [1, 1, H] (one fused kernel)."""
    return _AdaLNModulate.apply(x, shift, scale, eps)
