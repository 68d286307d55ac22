"""The value residual fused: v' = l1 * v + l2 * v_first, forward and backward.

v and v_first [B, heads, S, d] may be strided views (heads split out of projections, permuted);
lambdas = (l1, l2) are learned scalars. The backward writes dv = l1 * dout and dv_first = l2 * dout
in one pass and sums dout * v and dout * v_first for the lambdas' gradient (per-program partial
sums, added up by torch). Output contiguous [B, heads, S, d]. Reference: kernels/reference.py
value_mix.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.rounding import cast_rtne
from kernels.tiles import TORCH_TO_TRITON, rows_per_program


@triton.jit
def _kernel(v, vf, lambdas, dout, out, dvf, partial, heads, seq, dim, v_sb, v_sh, v_ss, f_sb, f_sh, f_ss,
            BACKWARD: tl.constexpr, ROWS: tl.constexpr, BLOCK: tl.constexpr, DTYPE: tl.constexpr):
    """Forward: out = l1 v + l2 vf. Backward: out = dv, dvf; partial[program] = (sum dout v, sum dout vf)."""
    bh = tl.program_id(0).to(tl.int64)
    b, h = bh // heads, bh % heads
    pos = tl.program_id(1).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK)
    mask = (pos < seq)[:, None] & (cols < dim)[None, :]
    l1 = tl.load(lambdas).to(tl.float32)
    l2 = tl.load(lambdas + 1).to(tl.float32)
    vv = tl.load(v + b * v_sb + h * v_sh + pos[:, None] * v_ss + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    fv = tl.load(vf + b * f_sb + h * f_sh + pos[:, None] * f_ss + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    dense = (bh * seq + pos[:, None]) * dim + cols[None, :]
    if BACKWARD:
        d = tl.load(dout + dense, mask=mask, other=0.0).to(tl.float32)
        tl.store(out + dense, cast_rtne(l1 * d, DTYPE), mask=mask)
        tl.store(dvf + dense, cast_rtne(l2 * d, DTYPE), mask=mask)
        program = bh * tl.num_programs(1) + tl.program_id(1)
        tl.store(partial + 2 * program, tl.sum(tl.sum(d * vv, axis=1), axis=0))
        tl.store(partial + 2 * program + 1, tl.sum(tl.sum(d * fv, axis=1), axis=0))
    else:
        tl.store(out + dense, cast_rtne(l1 * vv + l2 * fv, DTYPE), mask=mask)


def _launch(v, v_first, lambdas, dout=None):
    batch, heads, seq, dim = v.shape
    if v.stride(-1) != 1 or v_first.stride(-1) != 1:
        raise ValueError("v and v_first need unit stride along head_dim")
    block = triton.next_power_of_2(dim)
    rows = rows_per_program(block)
    grid = (batch * heads, triton.cdiv(seq, rows))
    out = torch.empty(v.shape, dtype=v.dtype, device=v.device)
    backward = dout is not None
    dvf = torch.empty_like(out) if backward else out
    partial = torch.empty(grid[0] * grid[1] if backward else 1, 2, dtype=torch.float32, device=v.device)
    _kernel[grid](v, v_first, lambdas.contiguous(), dout.contiguous() if backward else v, out, dvf, partial,
                  heads, seq, dim, *v.stride()[:3], *v_first.stride()[:3], BACKWARD=backward, ROWS=rows,
                  BLOCK=block, DTYPE=TORCH_TO_TRITON[v.dtype], num_warps=4)
    return out, dvf, partial


class _ValueMix(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v, v_first, lambdas):
        ctx.save_for_backward(v, v_first, lambdas)
        return _launch(v, v_first, lambdas)[0]

    @staticmethod
    def backward(ctx, dout):
        v, v_first, lambdas = ctx.saved_tensors
        dv, dvf, partial = _launch(v, v_first, lambdas, dout)
        return dv, dvf, partial.sum(0).to(lambdas.dtype)


def value_mix(v: torch.Tensor, v_first: torch.Tensor, lambdas: torch.Tensor) -> torch.Tensor:
    """lambdas[0] * v + lambdas[1] * v_first for [B, heads, S, d] tensors (one fused kernel)."""
    return _ValueMix.apply(v, v_first, lambdas)
