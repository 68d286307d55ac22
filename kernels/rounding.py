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


@triton.jit
def fp8_bits(x, BIAS: tl.constexpr, MANTISSA: tl.constexpr, MAX_BITS: tl.constexpr):
    """fp32 `x` -> the bits (uint8) of its FP8 value (exponent bias BIAS, MANTISSA bits): rounded to
    nearest even, saturated at the largest finite value MAX_BITS (infinities too), NaN -> 0x7F.
    This is torch's `x.clamp(-largest, largest).to(float8)`, spelt out in integers because the
    Triton interpreter (the CPU tests) rounds FP8 casts wrongly where the mantissa carries into
    the exponent; compiled, it costs a few integer operations in memory-bound kernels."""
    bits = x.to(tl.uint32, bitcast=True)
    sign = (bits >> 24) & 0x80
    mag = bits & 0x7FFFFFFF
    # Normal results: round fp32's mantissa to MANTISSA bits (ties to even), then rebias the exponent.
    shift = 23 - MANTISSA
    rounded = (mag + ((1 << (shift - 1)) - 1) + ((mag >> shift) & 1)) >> shift
    normal = rounded - ((127 - BIAS) << MANTISSA)
    # Subnormal results: |x| in units of the smallest subnormal, rounded to an integer (ties to even)
    # by fp32 addition of 2^23; a result of 2^MANTISSA is the smallest normal's bit pattern.
    units = mag.to(tl.float32, bitcast=True) * (1 << (BIAS - 1 + MANTISSA))
    subnormal = ((units + 8388608.0) - 8388608.0).to(tl.uint32)
    largest = ((MAX_BITS >> MANTISSA) + 127 - BIAS) << 23 | (MAX_BITS & ((1 << MANTISSA) - 1)) << shift
    magnitude = tl.where(mag < (128 - BIAS) << 23, subnormal, normal)
    magnitude = tl.where(mag >= largest, MAX_BITS, magnitude)
    magnitude = tl.where(mag > 0x7F800000, 0x7F, magnitude)
    return (sign | magnitude).to(tl.uint8)
