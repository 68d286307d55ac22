"""FP8 quantisation for the native FP8 linear: amax -> scale -> cast, per tensor or per row.

Formats (as Transformer Engine's HYBRID recipe): activations and weights in e4m3 (3 mantissa bits,
largest value 448), gradients in e5m2 (2 mantissa bits, largest 57,344). Gradients span a wider
range than activations and weights, and their few large entries would push the rest of a tensor
into e4m3's subnormals under one scale; e5m2 gives up a mantissa bit for 15 more binades of range.

Scales are powers of two, the largest that keep amax within the format: the target is a floating
point format, so a finer scale would add no mantissa precision, and a power of two makes scale and
inverse exact, leaving the cast's rounding as the only error.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

E4M3 = torch.float8_e4m3fn
E5M2 = torch.float8_e5m2
# The GEMM kernels (cuBLASLt, CUTLASS) need the contracted and the output dimension in multiples of 16.
GEMM_ALIGNMENT = 16


class Quantized(NamedTuple):
    """FP8 data (row-major, contiguous) and the inverse scale that dequantises it: a scalar for
    per-tensor scaling, one value per row ([rows, 1]) for row-wise scaling."""

    data: torch.Tensor
    inverse_scale: torch.Tensor


def power_of_two_scale(amax: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The largest power of two s with amax * s <= the format's largest value (at most 2^126; 1
    where amax is 0). Read off the bits: amax = m 2^E and largest = M 2^F give s = 2^(F - E), halved
    where m > M; exact, where a rounded log2 of a quotient could pick a scale a binade too large.
    kernels/fp8_cast.py computes the same scales on the GPU."""
    bits = amax.float().clamp(min=torch.finfo(torch.float32).tiny).view(torch.int32)
    largest = torch.tensor(torch.finfo(dtype).max, dtype=torch.float32).view(torch.int32).item()
    exponent = (largest >> 23) - (bits >> 23) - ((bits & 0x7FFFFF) > (largest & 0x7FFFFF)).int()
    scale = ((exponent.clamp(max=126) + 127) << 23).view(torch.float32)
    return torch.where(amax.float() == 0, torch.ones_like(scale), scale)


def scaled_cast(x: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """x * scale saturated to the format's range and cast (rounding to nearest even), contiguous."""
    largest = torch.finfo(dtype).max
    # A power-of-two scale multiplies exactly in bf16 (fp32's exponent range), so bf16 inputs skip
    # an fp32 copy; fp16's narrower range would overflow.
    work = x if x.dtype in (torch.float32, torch.bfloat16) else x.float()
    return (work * scale.to(work.dtype)).clamp(-largest, largest).to(dtype).contiguous()


def quantize(x: torch.Tensor, dtype: torch.dtype, rowwise: bool) -> Quantized:
    """x [rows, cols] (any layout) -> contiguous FP8 data with one scale per tensor or per row.

    Row-wise scales follow the last dimension, which every GEMM here contracts: each output
    element then sees one scale per operand, applied after the accumulation.
    """
    amax = x.abs().amax(dim=-1, keepdim=True) if rowwise else x.abs().amax()
    scale = power_of_two_scale(amax, dtype)
    return Quantized(scaled_cast(x, scale, dtype), scale.reciprocal())


def dequantize(q: Quantized, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return (q.data.float() * q.inverse_scale).to(dtype)


def pad_columns(q: Quantized, multiple: int = GEMM_ALIGNMENT) -> Quantized:
    """Zero columns appended up to a multiple of `multiple`: harmless in a contracted dimension."""
    rows, cols = q.data.shape
    extra = (-cols) % multiple
    if not extra:
        return q
    padded = torch.zeros(rows, cols + extra, dtype=q.data.dtype, device=q.data.device)
    padded[:, :cols] = q.data
    return Quantized(padded, q.inverse_scale)


def transpose(q: Quantized) -> Quantized:
    """The transposed FP8 matrix, contiguous (per-tensor scaling only: a row-wise scale would now
    run along the wrong dimension)."""
    if q.inverse_scale.numel() != 1:
        raise ValueError("only a per-tensor scaled matrix can be transposed in FP8")
    return Quantized(q.data.t().contiguous(), q.inverse_scale)


def scaled_matmul(a: Quantized, b_rows: Quantized, out_dtype: torch.dtype, fast_accumulation: bool) -> torch.Tensor:
    """a [M, K] @ b_rows[N, K]^T -> [M, N] in out_dtype, through torch._scaled_mm.

    The kernel wants its first operand row-major and its second column-major: b_rows is passed
    transposed (a view), so both are read in the layout they were quantised in. Row-wise scales go
    in as [M, 1] and [1, N]; the CUDA row-wise kernel writes bf16 only, and accepts e5m2 in the
    first operand only, which is why gradients always come first here.
    """
    rowwise = a.inverse_scale.numel() != 1
    out = torch._scaled_mm(a.data, b_rows.data.t(), scale_a=a.inverse_scale,
                           scale_b=b_rows.inverse_scale.reshape(1, -1) if rowwise else b_rows.inverse_scale,
                           out_dtype=torch.bfloat16 if rowwise else out_dtype, use_fast_accum=fast_accumulation)
    return out.to(out_dtype)
