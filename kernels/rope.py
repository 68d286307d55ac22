"""ND-RoPE applied to q and k in one kernel, forward and backward.

q and k [B, heads, S, d] may be strided views (heads split out of a projection, then permuted; a last
dimension that is not contiguous is copied first);
angles [S, d/2] are the layer's float32 band angles. Each program computes cos and sin for a tile
of positions in registers, once for all heads, and rotates that tile of every head of q and k
(eager PyTorch materialises them, rounds them to the activation dtype, and runs six elementwise
kernels and a concatenation per tensor). The backward is the inverse rotation of the gradients.
Outputs are contiguous [B, heads, S, d]; the gradients of q and k come out dense in q's and k's
own dimension order. Reference: kernels/reference.py rope_rotate (once for q, once for k).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.layouts import dense_like, unit_last_stride
from kernels.rounding import cast_rtne
from kernels.tiles import TORCH_TO_TRITON, rows_per_program


@triton.jit
def _rotate_tile(x, out, angles_cos, angles_sin, b, h, pos, valid, half_cols, cmask, half, stride_b, stride_h,
                 stride_s, out_b, out_h, out_s, SIGN: tl.constexpr, DTYPE: tl.constexpr):
    src = x + b * stride_b + h * stride_h + pos[:, None] * stride_s + half_cols[None, :]
    mask = valid[:, None] & cmask[None, :]
    x1 = tl.load(src, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(src + half, mask=mask, other=0.0).to(tl.float32)
    dst = out + b * out_b + h * out_h + pos[:, None] * out_s + half_cols[None, :]
    tl.store(dst, cast_rtne(x1 * angles_cos - SIGN * x2 * angles_sin, DTYPE), mask=mask)
    tl.store(dst + half, cast_rtne(SIGN * x1 * angles_sin + x2 * angles_cos, DTYPE), mask=mask)


@triton.jit
def _kernel(q, k, angles, q_out, k_out, heads, seq, half, q_sb, q_sh, q_ss, k_sb, k_sh, k_ss, qo_sb, qo_sh, qo_ss,
            ko_sb, ko_sh, ko_ss, SIGN: tl.constexpr, ROWS: tl.constexpr, BLOCK: tl.constexpr, DTYPE: tl.constexpr):
    """Program (sample b, tile of ROWS positions): cos and sin once, then every head of q and k."""
    b = tl.program_id(0).to(tl.int64)
    pos = tl.program_id(1).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    valid = pos < seq
    half_cols = tl.arange(0, BLOCK)
    cmask = half_cols < half
    theta = tl.load(angles + pos[:, None] * half + half_cols[None, :], mask=valid[:, None] & cmask[None, :],
                    other=0.0)
    cos, sin = tl.cos(theta), tl.sin(theta)
    for h in range(heads):
        _rotate_tile(q, q_out, cos, sin, b, h, pos, valid, half_cols, cmask, half, q_sb, q_sh, q_ss, qo_sb, qo_sh,
                     qo_ss, SIGN, DTYPE)
        _rotate_tile(k, k_out, cos, sin, b, h, pos, valid, half_cols, cmask, half, k_sb, k_sh, k_ss, ko_sb, ko_sh,
                     ko_ss, SIGN, DTYPE)


def _launch(q, k, angles, sign: int, q_out: torch.Tensor, k_out: torch.Tensor):
    batch, heads, seq, dim = q.shape
    if dim % 2 or angles.shape != (seq, dim // 2):
        raise ValueError(f"q {tuple(q.shape)} needs an even head_dim and angles [{seq}, {dim // 2}], "
                         f"not {tuple(angles.shape)}")
    q, k = unit_last_stride(q), unit_last_stride(k)
    half = dim // 2
    angles = angles.float().contiguous()
    block = triton.next_power_of_2(half)
    rows = rows_per_program(2 * block)
    _kernel[(batch, triton.cdiv(seq, rows))](
        q, k, angles, q_out, k_out, heads, seq, half, *q.stride()[:3], *k.stride()[:3], *q_out.stride()[:3],
        *k_out.stride()[:3], SIGN=sign, ROWS=rows, BLOCK=block, DTYPE=TORCH_TO_TRITON[q.dtype], num_warps=4)
    return q_out, k_out


class _RopeQK(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, angles):
        ctx.save_for_backward(angles)
        # The gradients go back in q's and k's own dimension order, dense: heads split out of a
        # projection then need no copy to flow back into it.
        ctx.layouts = [dense_like(t, device="meta") for t in (q, k)]
        return _launch(q, k, angles, 1, torch.empty(q.shape, dtype=q.dtype, device=q.device),
                       torch.empty(k.shape, dtype=k.dtype, device=k.device))

    @staticmethod
    def backward(ctx, dq, dk):
        (angles,) = ctx.saved_tensors
        outs = [dense_like(layout, dtype=dq.dtype, device=dq.device) for layout in ctx.layouts]
        # Attention's backward may hand gradients of any layout (the math backend's dk is a transpose):
        # the kernel reads them through their strides.
        dq, dk = _launch(dq, dk, angles, -1, *outs)
        return dq, dk, None


def rope_qk(q: torch.Tensor, k: torch.Tensor, angles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rope(q), rope(k)) for q, k [B, heads, S, d] and angles [S, d/2] (one fused kernel)."""
    if q.dim() != 4 or q.shape != k.shape or q.dtype != k.dtype:
        raise ValueError(f"q {tuple(q.shape)} {q.dtype} and k {tuple(k.shape)} {k.dtype} must match")
    return _RopeQK.apply(q, k, angles)
