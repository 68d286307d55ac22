"""Casts shared by the kernels."""
import triton
import triton.language as tl


@triton.jit
def cast_rtne(x, DTYPE: tl.constexpr):
    """fp32 `x` cast to DTYPE, rounding to nearest even as torch does. Spelt out for bf16 because
    the Triton interpreter (the CPU tests) truncates there; compiled, it is the native conversion's
    result at the cost of a few integer operations in memory-bound kernels."""
    if DTYPE == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = bits + 0x7FFF + ((bits >> 16) & 1)
        return (bits >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)
    else:
        return x.to(DTYPE)
