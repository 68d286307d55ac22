"""The gated MLP activation fused: m = silu(g) * u, forward and backward.

g and u [..., C] may be column slices of one projection output (any row stride, unit column
stride): they are read in place, and m, dg and du come out contiguous. The forward keeps nothing
but g and u; the backward recomputes the sigmoid. Reference: kernels/reference.py silu_gate.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.rounding import cast_rtne
from kernels.tiles import TORCH_TO_TRITON

BLOCK_C = 1024
ROWS = 4


@triton.jit
def _kernel(g, u, dm, out, dg, n_rows, cols_n, g_stride, u_stride, dm_stride, BACKWARD: tl.constexpr,
            ROWS: tl.constexpr, BLOCK: tl.constexpr, DTYPE: tl.constexpr):
    """Forward: out = silu(g) * u. Backward: out = du = dm * silu(g), dg = dm * u * silu'(g)."""
    row = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = (row < n_rows)[:, None] & (cols < cols_n)[None, :]
    gv = tl.load(g + row[:, None] * g_stride + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    uv = tl.load(u + row[:, None] * u_stride + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    sig = 1.0 / (1.0 + tl.exp(-gv))
    silu = gv * sig
    dense = row[:, None] * cols_n + cols[None, :]
    if BACKWARD:
        d = tl.load(dm + row[:, None] * dm_stride + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        tl.store(out + dense, cast_rtne(d * silu, DTYPE), mask=mask)
        tl.store(dg + dense, cast_rtne(d * uv * sig * (1.0 + gv * (1.0 - sig)), DTYPE), mask=mask)
    else:
        tl.store(out + dense, cast_rtne(silu * uv, DTYPE), mask=mask)


def _rows(t: torch.Tensor) -> tuple[torch.Tensor, int]:
    """t as [rows, C] with its row stride, without copying when its leading dims collapse."""
    flat = t.reshape(-1, t.shape[-1])
    if flat.stride(-1) != 1:
        flat = flat.contiguous()
    return flat, flat.stride(0)


def _launch(g, u, dm=None):
    g2, g_stride = _rows(g)
    u2, u_stride = _rows(u)
    dm2, dm_stride = _rows(dm) if dm is not None else (g2, g_stride)
    rows, cols = g2.shape
    out = torch.empty(g.shape, dtype=g.dtype, device=g.device)
    dg = torch.empty_like(out) if dm is not None else out
    block = min(BLOCK_C, triton.next_power_of_2(cols))
    _kernel[(triton.cdiv(rows, ROWS), triton.cdiv(cols, block))](
        g2, u2, dm2, out, dg, rows, cols, g_stride, u_stride, dm_stride, BACKWARD=dm is not None,
        ROWS=ROWS, BLOCK=block, DTYPE=TORCH_TO_TRITON[g.dtype], num_warps=4)
    return out, dg


class _SiluGate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, g, u):
        ctx.save_for_backward(g, u)
        return _launch(g, u)[0]

    @staticmethod
    def backward(ctx, dm):
        g, u = ctx.saved_tensors
        du, dg = _launch(g, u, dm)
        return dg, du


def silu_gate(g: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """silu(g) * u (one fused kernel each way); g and u may be strided column slices."""
    return _SiluGate.apply(g, u)
