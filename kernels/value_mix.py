"""The value residual fused: v' = l1 * v + l2 * v_first, forward and backward.

v and v_first [B, heads, S, d] may be strided views (heads split out of projections, permuted);
lambdas = (l1, l2) are learned scalars. Each program walks ROWS (position, sample) rows across all
heads, so where the heads of a row are adjacent in memory (the projection's layout) it reads and
writes whole rows in one stream. v' and the gradients come out dense in the layout of the tensor
they belong to (v' and dv as v, dv_first as v_first): a transpose to [B, heads, S, d] would cost a
pass of its own here and another when the gradient flows back into the projection. The backward
writes dv = l1 * dout and dv_first = l2 * dout in one pass, reading dout in whatever layout
attention's backward hands it, and sums dout * v and dout * v_first for the lambdas' gradient
(per-program partial sums, added up by torch). Reference: kernels/reference.py value_mix.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.layouts import dense_like, same_shape, unit_last_stride
from kernels.rounding import cast_rtne
from kernels.tiles import TORCH_TO_TRITON, autotune

ROWS = 4  # (position, sample) rows per program: fixes the number of partial sums of the backward
CONFIGS = [triton.Config({"BLOCK": block}, num_warps=warps) for block, warps in ((512, 4), (1024, 4), (1024, 8),
                                                                                  (2048, 8))]


@triton.jit
def _offsets(b, s, h, j, stride_b, stride_h, stride_s):
    """Element offsets of rows (b, s) x columns (h, j) of a tensor with these strides."""
    return b[:, None] * stride_b + s[:, None] * stride_s + h[None, :] * stride_h + j[None, :]


@autotune(CONFIGS, key=["batch", "cols", "HEAD_DIM", "BACKWARD"])
@triton.jit
def _kernel(v, vf, lambdas, dout, out, dvf, partial, n_rows, batch, cols, v_sb, v_sh, v_ss, f_sb, f_sh, f_ss,
            d_sb, d_sh, d_ss, o_sb, o_sh, o_ss, g_sb, g_sh, g_ss, HEAD_DIM: tl.constexpr, BACKWARD: tl.constexpr,
            ROWS: tl.constexpr, DTYPE: tl.constexpr, BLOCK: tl.constexpr):
    """Forward: out = l1 v + l2 vf. Backward: out = dv, dvf; partial[program] = (sum dout v, sum dout vf).
    Row r is sample r % batch at position r // batch; column c is head c // HEAD_DIM, channel c % HEAD_DIM."""
    program = tl.program_id(0)
    rows = program.to(tl.int64) * ROWS + tl.arange(0, ROWS)
    b, s = rows % batch, rows // batch
    l1 = tl.load(lambdas).to(tl.float32)
    l2 = tl.load(lambdas + 1).to(tl.float32)
    sum_v = tl.zeros([ROWS, BLOCK], dtype=tl.float32)
    sum_f = tl.zeros([ROWS, BLOCK], dtype=tl.float32)
    for start in range(0, cols, BLOCK):
        c = start + tl.arange(0, BLOCK)
        h, j = c // HEAD_DIM, c % HEAD_DIM
        mask = (rows < n_rows)[:, None] & (c < cols)[None, :]
        vv = tl.load(v + _offsets(b, s, h, j, v_sb, v_sh, v_ss), mask=mask, other=0.0).to(tl.float32)
        fv = tl.load(vf + _offsets(b, s, h, j, f_sb, f_sh, f_ss), mask=mask, other=0.0).to(tl.float32)
        to_out = _offsets(b, s, h, j, o_sb, o_sh, o_ss)
        if BACKWARD:
            d = tl.load(dout + _offsets(b, s, h, j, d_sb, d_sh, d_ss), mask=mask, other=0.0).to(tl.float32)
            tl.store(out + to_out, cast_rtne(l1 * d, DTYPE), mask=mask)
            tl.store(dvf + _offsets(b, s, h, j, g_sb, g_sh, g_ss), cast_rtne(l2 * d, DTYPE), mask=mask)
            sum_v += d * vv
            sum_f += d * fv
        else:
            tl.store(out + to_out, cast_rtne(l1 * vv + l2 * fv, DTYPE), mask=mask)
    if BACKWARD:
        tl.store(partial + 2 * program, tl.sum(tl.sum(sum_v, axis=1), axis=0))
        tl.store(partial + 2 * program + 1, tl.sum(tl.sum(sum_f, axis=1), axis=0))


def _strides(t: torch.Tensor) -> tuple[int, int, int]:
    return t.stride(0), t.stride(1), t.stride(2)


def _launch(v, v_first, lambdas, dout=None):
    """Forward (dout None): (v', None, None). Backward: (dv, dv_first, partial sums [programs, 2])."""
    same_shape(v, v_first=v_first, **({} if dout is None else {"dout": dout}))
    if v.dim() != 4 or lambdas.numel() != 2:
        raise ValueError(f"v {tuple(v.shape)} must be [B, heads, S, d] and lambdas {tuple(lambdas.shape)} two values")
    batch, heads, seq, dim = v.shape
    backward = dout is not None
    out = dense_like(v)  # v's dimension order
    dvf = dense_like(v_first) if backward else out
    programs = triton.cdiv(batch * seq, ROWS)
    partial = torch.empty(programs if backward else 1, 2, dtype=torch.float32, device=v.device)
    v, v_first = unit_last_stride(v), unit_last_stride(v_first)
    dout = unit_last_stride(dout) if backward else v
    _kernel[(programs,)](v, v_first, lambdas.contiguous(), dout, out, dvf, partial, batch * seq,
                         batch, heads * dim, *_strides(v), *_strides(v_first), *_strides(dout),
                         *_strides(out), *_strides(dvf), HEAD_DIM=dim, BACKWARD=backward, ROWS=ROWS,
                         DTYPE=TORCH_TO_TRITON[v.dtype])
    return (out, dvf, partial) if backward else (out, None, None)


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
