"""FP8 quantisation for the native FP8 linear (megatron_video/model/fp8): an amax pass, then one
pass that scales, saturates and casts, writing the row-major FP8 matrix, its transpose, or both.

Every GEMM operand of a linear is a [rows, K] matrix contracted along K; the backward GEMMs
contract the forward's other dimension, so they need the transpose. Writing both layouts from one
read of the source replaces an eager abs -> amax -> multiply -> clamp -> cast -> contiguous chain
per layout. Scales are those of the reference (megatron_video/model/fp8/scaling.py), bit for bit:
- per tensor: one power-of-two scale from the tensor's amax (`tensor_scales`), or from an amax
  history of earlier calls (`delayed_scales`: a single pass, recording this call's amax);
- row-wise: the row-major output scaled per source row, the transpose per source column, which
  are the rows of the transposed matrix (`row_scales`): both along each GEMM's contracted dimension.
Amaxes travel as int32 bit patterns: non-negative floats order like their bits, so integer
atomic max
reduces them across programs exactly (and a NaN, the largest pattern, propagates).
The transpose's rows may be padded with zero columns to the FP8 GEMMs' alignment in the same pass.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.rounding import fp8_bits

BLOCK_ROWS, BLOCK_COLS = 128, 128  # 32 KB of bf16 a program: few amax atomics, full-line transposed stores
NUM_WARPS = 8
# (exponent bias, mantissa bits, largest finite value's bits) of each FP8 format.
FORMATS = {torch.float8_e4m3fn: (7, 3, 0x7E), torch.float8_e5m2: (15, 2, 0x7B)}
TENSOR, ROWS, DELAYED = 0, 1, 2


@triton.jit
def _scale_exponent(amax_bits, BIAS: tl.constexpr, MANTISSA: tl.constexpr, MAX_BITS: tl.constexpr):
    """e with 2^e the largest power of two keeping amax * 2^e within the format (0 where amax is
    0, at most 126): amax = m 2^E and largest = M 2^F give e = F - E, less one where m > M."""
    bits = tl.maximum(amax_bits, 0x00800000)  # amax below fp32's smallest normal counts as it
    largest_exponent = (MAX_BITS >> MANTISSA) - BIAS
    largest_mantissa = (MAX_BITS & ((1 << MANTISSA) - 1)) << (23 - MANTISSA)
    e = largest_exponent - ((bits >> 23) - 127) - ((bits & 0x7FFFFF) > largest_mantissa).to(tl.int32)
    return tl.where(amax_bits == 0, 0, tl.minimum(e, 126))


@triton.jit
def _power_of_two(e):
    """2^e as fp32, for e in [-126, 127]: its bits are the biased exponent alone."""
    return ((e + 127) << 23).to(tl.float32, bitcast=True)


@triton.jit
def _amax_kernel(x, tensor_amax, row_amax, col_amax, rows, cols, stride_r, stride_c, TENSOR_AMAX: tl.constexpr,
                 ROW_AMAX: tl.constexpr, COL_AMAX: tl.constexpr, BR: tl.constexpr, BC: tl.constexpr):
    """Atomic max of |x| (as int32 bits) over the tensor, its rows and/or its columns."""
    r = tl.program_id(0).to(tl.int64) * BR + tl.arange(0, BR)
    c = tl.program_id(1).to(tl.int64) * BC + tl.arange(0, BC)
    mask = (r < rows)[:, None] & (c < cols)[None, :]
    v = tl.load(x + r[:, None] * stride_r + c[None, :] * stride_c, mask=mask, other=0.0).to(tl.float32)
    bits = tl.abs(v).to(tl.int32, bitcast=True)
    if TENSOR_AMAX:
        tl.atomic_max(tensor_amax, tl.max(tl.max(bits, axis=1), axis=0))
    if ROW_AMAX:
        tl.atomic_max(row_amax + r, tl.max(bits, axis=1), mask=r < rows)
    if COL_AMAX:
        tl.atomic_max(col_amax + c, tl.max(bits, axis=0), mask=c < cols)


@triton.jit
def _cast_kernel(x, out, out_t, row_amax, col_amax, inverse, inverse_t, history, rows, cols, padded_rows,
                 stride_r, stride_c, slot, history_len, SCALING: tl.constexpr, WRITE: tl.constexpr,
                 WRITE_T: tl.constexpr, BIAS: tl.constexpr, MANTISSA: tl.constexpr, MAX_BITS: tl.constexpr,
                 HISTORY_BLOCK: tl.constexpr, BR: tl.constexpr, BC: tl.constexpr):
    """out[r, c] and/or out_t[c, r] (row length padded_rows, zeros past `rows`) = FP8 of x * scale.

    SCALING: TENSOR takes the scale from row_amax[0]; ROWS from row_amax[r] for out and
    col_amax[c] for out_t; DELAYED from the max of `history` over every slot but `slot` (which
    gathers this call's amax) and the one after it (zeroed here, ready for the next call).
    Inverse scales go to inverse ([1] or [rows]) and inverse_t ([1] or [cols])."""
    pid_r, pid_c = tl.program_id(0), tl.program_id(1)
    r = pid_r.to(tl.int64) * BR + tl.arange(0, BR)
    c = pid_c.to(tl.int64) * BC + tl.arange(0, BC)
    in_rows, in_cols = r < rows, c < cols
    mask = in_rows[:, None] & in_cols[None, :]
    v = tl.load(x + r[:, None] * stride_r + c[None, :] * stride_c, mask=mask, other=0.0).to(tl.float32)
    first = (pid_r == 0) & (pid_c == 0)
    if SCALING == 1:
        if WRITE:
            e_rows = _scale_exponent(tl.load(row_amax + r, mask=in_rows, other=0), BIAS, MANTISSA, MAX_BITS)
            q = fp8_bits(v * _power_of_two(e_rows)[:, None], BIAS, MANTISSA, MAX_BITS)
            tl.store(out + r[:, None] * cols + c[None, :], q, mask=mask)
            if pid_c == 0:
                tl.store(inverse + r, _power_of_two(-e_rows), mask=in_rows)
        if WRITE_T:
            e_cols = _scale_exponent(tl.load(col_amax + c, mask=in_cols, other=0), BIAS, MANTISSA, MAX_BITS)
            q = fp8_bits(v * _power_of_two(e_cols)[None, :], BIAS, MANTISSA, MAX_BITS)
            tl.store(out_t + c[None, :] * padded_rows + r[:, None], q,
                     mask=(r < padded_rows)[:, None] & in_cols[None, :])
            if pid_r == 0:
                tl.store(inverse_t + c, _power_of_two(-e_cols), mask=in_cols)
    else:
        if SCALING == 2:
            h = tl.arange(0, HISTORY_BLOCK)
            next_slot = (slot + 1) % history_len
            past = tl.load(history + h, mask=(h < history_len) & (h != slot) & (h != next_slot), other=0)
            e = _scale_exponent(tl.max(past, axis=0), BIAS, MANTISSA, MAX_BITS)
            tl.atomic_max(history + slot, tl.max(tl.max(tl.abs(v).to(tl.int32, bitcast=True), axis=1), axis=0))
            tl.store(history + next_slot, 0, mask=first)
        else:
            e = _scale_exponent(tl.load(row_amax), BIAS, MANTISSA, MAX_BITS)
        q = fp8_bits(v * _power_of_two(e), BIAS, MANTISSA, MAX_BITS)
        if WRITE:
            tl.store(out + r[:, None] * cols + c[None, :], q, mask=mask)
        if WRITE_T:
            tl.store(out_t + c[None, :] * padded_rows + r[:, None], q,
                     mask=(r < padded_rows)[:, None] & in_cols[None, :])
        tl.store(inverse, _power_of_two(-e), mask=first)


def _amax(x: torch.Tensor, tensor: bool, rows: bool, cols: bool) -> tuple[torch.Tensor, ...]:
    """(tensor amax [1], row amaxes [rows], column amaxes [cols]) as int32 bits; empty where not asked."""
    n_rows, n_cols = x.shape
    zeros = torch.zeros(int(tensor) + n_rows * rows + n_cols * cols, dtype=torch.int32, device=x.device)
    amaxes = zeros.split([int(tensor), n_rows * rows, n_cols * cols])
    _amax_into(x, *amaxes)
    return amaxes


def _amax_into(x: torch.Tensor, tensor_amax: torch.Tensor, row_amax: torch.Tensor | None = None,
               col_amax: torch.Tensor | None = None) -> None:
    """Atomic max of x's amax bits into the given (non-empty) buffers."""
    n_rows, n_cols = x.shape
    tensor, rows, cols = (t is not None and t.numel() > 0 for t in (tensor_amax, row_amax, col_amax))
    tensor_amax = tensor_amax if tensor else x.new_empty(0, dtype=torch.int32)
    row_amax = row_amax if rows else tensor_amax
    col_amax = col_amax if cols else tensor_amax
    grid = (triton.cdiv(n_rows, BLOCK_ROWS), triton.cdiv(n_cols, BLOCK_COLS))
    _amax_kernel[grid](x, tensor_amax, row_amax, col_amax, n_rows, n_cols, x.stride(0), x.stride(1),
                       TENSOR_AMAX=tensor, ROW_AMAX=rows, COL_AMAX=cols, BR=BLOCK_ROWS, BC=BLOCK_COLS,
                       num_warps=NUM_WARPS)


def _cast(x, dtype, scaling, row_amax, col_amax, history, slot, row_major, transposed, pad_to):
    n_rows, n_cols = x.shape
    padded = -(-n_rows // pad_to) * pad_to
    device = x.device
    out = torch.empty((n_rows, n_cols) if row_major else (0,), dtype=dtype, device=device)
    out_t = torch.empty((n_cols, padded) if transposed else (0,), dtype=dtype, device=device)
    per_row = scaling == ROWS
    inverse = torch.empty(n_rows if per_row else 1, dtype=torch.float32, device=device)
    inverse_t = torch.empty(n_cols, dtype=torch.float32, device=device) if per_row else inverse
    bias, mantissa, max_bits = FORMATS[dtype]
    history_len = history.numel() if history is not None else 1
    grid = (triton.cdiv(padded if transposed else n_rows, BLOCK_ROWS), triton.cdiv(n_cols, BLOCK_COLS))
    _cast_kernel[grid](x, out.view(torch.uint8), out_t.view(torch.uint8), row_amax, col_amax, inverse, inverse_t,
                       history if history is not None else row_amax, n_rows, n_cols, padded, x.stride(0),
                       x.stride(1), slot, history_len, SCALING=scaling, WRITE=row_major, WRITE_T=transposed,
                       BIAS=bias, MANTISSA=mantissa, MAX_BITS=max_bits,
                       HISTORY_BLOCK=triton.next_power_of_2(history_len), BR=BLOCK_ROWS, BC=BLOCK_COLS,
                       num_warps=NUM_WARPS)
    pairs = []
    if row_major:
        pairs.append((out, inverse.view(-1, 1) if per_row else inverse.view(())))
    if transposed:
        pairs.append((out_t, inverse_t.view(-1, 1) if per_row else inverse_t.view(())))
    return pairs


def tensor_scales(x: torch.Tensor, dtype: torch.dtype, row_major: bool, transposed: bool,
                  pad_to: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """x [rows, cols] (any strides) -> [(FP8 data, inverse scale)] for the row-major matrix and/or
    its transpose [cols, rows padded to a multiple of pad_to], one per-tensor scale for both."""
    amax = _amax(x, True, False, False)[0]
    return _cast(x, dtype, TENSOR, amax, amax, None, 0, row_major, transposed, pad_to)


def row_scales(x: torch.Tensor, dtype: torch.dtype, row_major: bool, transposed: bool,
               pad_to: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """As tensor_scales with a scale per row of each output ([rows, 1] inverse scales for the
    row-major matrix, [cols, 1] for the transpose)."""
    _, row_amax, col_amax = _amax(x, False, row_major, transposed)
    return _cast(x, dtype, ROWS, row_amax, col_amax, None, 0, row_major, transposed, pad_to)


def delayed_scales(x: torch.Tensor, dtype: torch.dtype, history: torch.Tensor, call: int, row_major: bool,
                   transposed: bool, pad_to: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """As tensor_scales in one pass, the scale from `history` (int32 amax bits, at least 3 slots,
    zeros before call 0) for the call-th call: slot = call mod slots gathers this call's amax (it
    is zero until then), the next slot is zeroed for the next call, and the scale is the max over
    the other slots. On call 0, when the history holds nothing yet, x's amax is taken first, into
    the last slot."""
    if history.numel() < 3 or history.dtype != torch.int32:
        raise ValueError("an amax history needs at least 3 int32 slots")
    if call == 0:
        _amax_into(x, history[-1:])
    return _cast(x, dtype, DELAYED, history, history, history, call % history.numel(), row_major, transposed,
                 pad_to)
