"""The gated MLP activation fused: m = silu(g) * u, forward and backward.

g and u [..., C] may be column slices of one projection output (any row stride, unit column
stride): they are read in place, and m, dg and du come out contiguous. The forward keeps nothing
but g and u; the backward recomputes the sigmoid. `concat_silu_gate` writes m straight into the
right half of the parallel block's [attention | MLP] buffer, saving the concatenation's copy of it.
References: kernels/reference.py silu_gate and concat_silu_gate.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.layouts import same_shape, unit_last_stride
from kernels.rounding import cast_rtne
from kernels.tiles import TORCH_TO_TRITON, autotune

# Tile shapes (rows x columns, warps) for a memory-bound elementwise pass: 8 to 32 elements of each
# tensor per thread, in 16-byte vectors.
CONFIGS = [triton.Config({"ROWS": rows, "BLOCK": block}, num_warps=warps)
           for rows, block, warps in ((2, 1024, 4), (1, 1024, 4), (1, 2048, 8), (4, 1024, 4), (8, 1024, 8))]


@autotune(CONFIGS, key=["cols_n", "BACKWARD"])
@triton.jit
def _kernel(g, u, dm, out, dg, n_rows, cols_n, g_stride, u_stride, dm_stride, out_stride, BACKWARD: tl.constexpr,
            DTYPE: tl.constexpr, ROWS: tl.constexpr, BLOCK: tl.constexpr):
    """Forward: out = silu(g) * u. Backward: out = du = dm * silu(g), dg = dm * u * silu'(g).
    out has row stride out_stride (a slice of a wider buffer in the forward); dg is dense.
    A one-dimensional grid with the column blocks of a row tile adjacent: programs running at once
    stream whole rows, as a flat copy would."""
    col_blocks = tl.cdiv(cols_n, BLOCK)
    pid = tl.program_id(0)
    row = (pid // col_blocks).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    cols = (pid % col_blocks) * BLOCK + tl.arange(0, BLOCK)
    mask = (row < n_rows)[:, None] & (cols < cols_n)[None, :]
    gv = tl.load(g + row[:, None] * g_stride + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    uv = tl.load(u + row[:, None] * u_stride + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    sig = 1.0 / (1.0 + tl.exp(-gv))
    silu = gv * sig
    to_out = row[:, None] * out_stride + cols[None, :]
    if BACKWARD:
        d = tl.load(dm + row[:, None] * dm_stride + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        tl.store(out + to_out, cast_rtne(d * silu, DTYPE), mask=mask)
        tl.store(dg + row[:, None] * cols_n + cols[None, :], cast_rtne(d * uv * sig * (1.0 + gv * (1.0 - sig)), DTYPE),
                 mask=mask)
    else:
        tl.store(out + to_out, cast_rtne(silu * uv, DTYPE), mask=mask)


def _rows(t: torch.Tensor) -> tuple[torch.Tensor, int]:
    """t as [rows, C] with its row stride, without copying when its leading dims collapse."""
    flat = unit_last_stride(t.reshape(-1, t.shape[-1]))
    return flat, flat.stride(0)


def _launch(g, u, dm=None, out=None):
    """Forward (dm None): silu(g) * u into `out` (a [..., C] view, e.g. a slice of a wider buffer)
    or a new tensor. Backward: (du, dg) for the output gradient dm."""
    same_shape(g, u=u, **({} if dm is None else {"dm": dm}), **({} if out is None else {"out": out}))
    g2, g_stride = _rows(g)
    u2, u_stride = _rows(u)
    dm2, dm_stride = _rows(dm) if dm is not None else (g2, g_stride)
    rows, cols = g2.shape
    if out is None:
        out = torch.empty(g.shape, dtype=g.dtype, device=g.device)
    out2 = out.view(-1, cols) if out.is_contiguous() else out.flatten(0, -2)
    if out2.stride(-1) != 1 or out2.data_ptr() != out.data_ptr():
        raise ValueError("the output must be a view with unit column stride whose leading dims collapse")
    dg = torch.empty(g.shape, dtype=g.dtype, device=g.device) if dm is not None else out
    _kernel[lambda meta: (triton.cdiv(rows, meta["ROWS"]) * triton.cdiv(cols, meta["BLOCK"]),)](
        g2, u2, dm2, out2, dg, rows, cols, g_stride, u_stride, dm_stride, out2.stride(0), BACKWARD=dm is not None,
        DTYPE=TORCH_TO_TRITON[g.dtype])
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


class _ConcatSiluGate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, g, u):
        if a.shape[:-1] != g.shape[:-1]:
            raise ValueError(f"a {tuple(a.shape)} and g {tuple(g.shape)} must agree but for the last dimension")
        width = a.shape[-1]
        merged = torch.empty(*a.shape[:-1], width + g.shape[-1], dtype=a.dtype, device=a.device)
        merged[..., :width].copy_(a)
        _launch(g, u, out=merged[..., width:])
        ctx.save_for_backward(g, u)
        ctx.width = width
        return merged

    @staticmethod
    def backward(ctx, dmerged):
        g, u = ctx.saved_tensors
        du, dg = _launch(g, u, dmerged[..., ctx.width:])
        return dmerged[..., :ctx.width], dg, du


def concat_silu_gate(a: torch.Tensor, g: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """[a, silu(g) * u] along the last dim (the parallel block's input to W_out), the activation
    written straight into its half of the result instead of through a concatenation."""
    return _ConcatSiluGate.apply(a, g, u)
