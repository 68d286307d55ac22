"""Native FP8 linear layers on `torch._scaled_mm`, for machines without Transformer Engine.

All three GEMMs of a linear layer run in FP8: the forward (x W^T, e4m3 x e4m3), the input gradient
(dy W, e5m2 x e4m3) and the weight gradient (dy^T x, e5m2 x e4m3); accumulation is fp32 inside the
kernel. Parameters stay in their own dtype (the fp32 or bf16 master weights the optimizer updates,
so sphere-constrained rows remain exact unit rows); each forward quantises them afresh.

Scaling is dynamic (from this call's amax):
- "tensor": one scale per tensor. x and W are quantised once in the forward and dy once in the
  backward; the backward GEMMs reuse them transposed in FP8, and the layer saves x in FP8 for
  backward (half the bytes of bf16).
- "row": one scale per row of each GEMM operand along the contracted dimension, so every GEMM
  quantises its operands from high precision (x is saved in its own dtype). Finer scales cost
  memory traffic, and they keep an outlier token or channel from flattening the others.

The TP layers subclass megatron-core's ColumnParallelLinear / RowParallelLinear and replace only
their matmul (`_forward_impl`): weights, initialisation, TP attributes, sequence-parallel
communication through megatron's own mappings, and `tensor_parallel_layout` stay the same, and the
optimizer's sphere rules see the same parameters.
"""
from __future__ import annotations

import torch
from megatron.core.tensor_parallel import ColumnParallelLinear, RowParallelLinear
from megatron.core.tensor_parallel.mappings import (
    copy_to_tensor_model_parallel_region,
    gather_from_sequence_parallel_region,
)

from megatron_video.model.fp8.scaling import (
    E4M3,
    E5M2,
    GEMM_ALIGNMENT,
    Quantized,
    pad_columns,
    quantize,
    scaled_matmul,
    transpose,
)

SCALINGS = ("tensor", "row")


def _output_dtype(x: torch.Tensor) -> torch.dtype:
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype


class _Fp8Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, rowwise: bool) -> torch.Tensor:
        out_dtype = _output_dtype(x)
        x2 = x.reshape(-1, x.shape[-1])
        qx, qw = quantize(x2, E4M3, rowwise), quantize(weight, E4M3, rowwise)
        # Fast (lower-precision) accumulation in the forward only, as TE and torchao do.
        y = scaled_matmul(qx, qw, out_dtype, fast_accumulation=True)
        ctx.rowwise, ctx.x_shape, ctx.x_dtype, ctx.w_dtype = rowwise, x.shape, x.dtype, weight.dtype
        if rowwise:
            ctx.save_for_backward(x2, weight)
        else:
            ctx.save_for_backward(qx.data, qx.inverse_scale, qw.data, qw.inverse_scale)
        return y.view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        dy2 = dy.reshape(-1, dy.shape[-1])
        if ctx.rowwise:
            x2, weight = ctx.saved_tensors
            dx = scaled_matmul(quantize(dy2, E5M2, True), quantize(weight.t(), E4M3, True), ctx.x_dtype, False)
            # The token dimension is contracted in the weight gradient: pad it to the kernels' alignment.
            dw = scaled_matmul(pad_columns(quantize(dy2.t(), E5M2, True)),
                               pad_columns(quantize(x2.t(), E4M3, True)), ctx.w_dtype, False)
        else:
            x_data, x_inverse, w_data, w_inverse = ctx.saved_tensors
            qdy = quantize(dy2, E5M2, False)
            dx = scaled_matmul(qdy, transpose(Quantized(w_data, w_inverse)), ctx.x_dtype, False)
            dw = scaled_matmul(pad_columns(transpose(qdy)), pad_columns(transpose(Quantized(x_data, x_inverse))),
                               ctx.w_dtype, False)
        return dx.view(ctx.x_shape), dw, None


def fp8_linear(x: torch.Tensor, weight: torch.Tensor, scaling: str) -> torch.Tensor:
    """x [..., in] @ weight[out, in]^T with every GEMM of forward and backward in FP8."""
    if scaling not in SCALINGS:
        raise ValueError(f"FP8 scaling must be one of {SCALINGS}, not {scaling!r}")
    return _Fp8Linear.apply(x, weight, scaling == "row")


def _check_alignment(layer: torch.nn.Module) -> None:
    out_features, in_features = layer.weight.shape
    if out_features % GEMM_ALIGNMENT or in_features % GEMM_ALIGNMENT:
        raise ValueError(f"native FP8 needs this rank's weight dimensions in multiples of {GEMM_ALIGNMENT}, "
                         f"got {tuple(layer.weight.shape)} (train.fp8=native)")


class Fp8ColumnParallelLinear(ColumnParallelLinear):
    """megatron's ColumnParallelLinear with its matmul in FP8 (see the module docstring)."""

    def __init__(self, *args, fp8_scaling: str = "tensor", **kwargs):
        super().__init__(*args, **kwargs)
        self.fp8_scaling = fp8_scaling
        _check_alignment(self)

    def _forward_impl(self, input, weight, bias, gradient_accumulation_fusion, allreduce_dgrad,
                      sequence_parallel, tp_group=None, **_):
        if gradient_accumulation_fusion:
            raise ValueError("native FP8 linears return weight gradients; gradient_accumulation_fusion must be off")
        # The same communication as megatron's fused path, through its autograd mappings: all-gather
        # the sequence (reduce-scatter its gradient) or all-reduce the input gradient.
        if sequence_parallel:
            input = gather_from_sequence_parallel_region(input, tensor_parallel_output_grad=True, group=tp_group)
        elif allreduce_dgrad:
            input = copy_to_tensor_model_parallel_region(input, group=tp_group)
        out = fp8_linear(input, weight, self.fp8_scaling)
        return out if bias is None else out + bias


class Fp8RowParallelLinear(RowParallelLinear):
    """megatron's RowParallelLinear with its matmul in FP8; its output reduction is megatron's."""

    def __init__(self, *args, fp8_scaling: str = "tensor", **kwargs):
        super().__init__(*args, **kwargs)
        self.fp8_scaling = fp8_scaling
        _check_alignment(self)

    def _forward_impl(self, input, weight, bias, gradient_accumulation_fusion, **_):
        if gradient_accumulation_fusion:
            raise ValueError("native FP8 linears return weight gradients; gradient_accumulation_fusion must be off")
        out = fp8_linear(input, weight, self.fp8_scaling)
        return out if bias is None else out + bias
