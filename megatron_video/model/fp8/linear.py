"""Native FP8 linear layers on `torch._scaled_mm`, for machines without Transformer Engine.

All three GEMMs of a linear layer run in FP8: the forward (x W^T, e4m3 x e4m3), the input gradient
(dy W, e5m2 x e4m3) and the weight gradient (dy^T x, e5m2 x e4m3); accumulation is fp32 inside the
kernel. Parameters stay in their own dtype (the fp32 or bf16 master weights the optimizer updates,
so sphere-constrained rows remain exact unit rows); their FP8 copies are made once per optimizer
step. operands.py quantises each operand in both layouts its GEMMs read, in one pass on CUDA, by
the scaling train.fp8_scaling names (per tensor current or delayed, or row-wise); the layer saves
the input in FP8 for backward, transposed, as the weight gradient reads it.

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

from megatron_video.model.fp8.operands import LinearOperands
from megatron_video.model.fp8.scaling import GEMM_ALIGNMENT, Quantized, scaled_matmul


def _output_dtype(x: torch.Tensor) -> torch.dtype:
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype


class _Fp8Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, operands: LinearOperands) -> torch.Tensor:
        out_dtype = _output_dtype(x)
        x2 = x.reshape(-1, x.shape[-1])
        (qx, qx_t), (qw, qw_t) = operands.input(x2), operands.weight(weight)
        # Fast (lower-precision) accumulation in the forward only, as TE and torchao do.
        y = scaled_matmul(qx, qw, out_dtype, fast_accumulation=True)
        ctx.operands, ctx.x_shape, ctx.x_dtype, ctx.w_dtype = operands, x.shape, x.dtype, weight.dtype
        ctx.save_for_backward(qx_t.data, qx_t.inverse_scale, qw_t.data, qw_t.inverse_scale)
        return y.view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        x_t, x_t_inverse, w_t, w_t_inverse = ctx.saved_tensors
        qdy, qdy_t = ctx.operands.grad(dy.reshape(-1, dy.shape[-1]))
        dx = scaled_matmul(qdy, Quantized(w_t, w_t_inverse), ctx.x_dtype, False)
        # Tokens are contracted here: both transposes' token rows come padded to the GEMM alignment.
        dw = scaled_matmul(qdy_t, Quantized(x_t, x_t_inverse), ctx.w_dtype, False)
        return dx.view(ctx.x_shape), dw, None


@torch.compiler.disable
def fp8_linear(x: torch.Tensor, weight: torch.Tensor, operands: LinearOperands) -> torch.Tensor:
    """x [..., in] @ weight[out, in]^T with every GEMM of forward and backward in FP8, the operands
    quantised by `operands` (which caches the weight's FP8 copies between optimizer steps).

    Left out of compiled graphs, as the block ops are (model/block_ops.py): dynamo cannot trace the
    Triton cast kernels' launches, and `operands` is state that changes every call (the weight
    cache, the amax history's slot) which a graph would capture as constants."""
    return _Fp8Linear.apply(x, weight, operands)


def _check_alignment(layer: torch.nn.Module) -> None:
    out_features, in_features = layer.weight.shape
    if out_features % GEMM_ALIGNMENT or in_features % GEMM_ALIGNMENT:
        raise ValueError(f"native FP8 needs this rank's weight dimensions in multiples of {GEMM_ALIGNMENT}, "
                         f"got {tuple(layer.weight.shape)} (train.fp8=native)")


class Fp8ColumnParallelLinear(ColumnParallelLinear):
    """megatron's ColumnParallelLinear with its matmul in FP8 (see the module docstring)."""

    def __init__(self, *args, fp8_scaling: str = "tensor", **kwargs):
        super().__init__(*args, **kwargs)
        self.fp8_operands = LinearOperands(fp8_scaling)
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
        out = fp8_linear(input, weight, self.fp8_operands)
        return out if bias is None else out + bias


class Fp8RowParallelLinear(RowParallelLinear):
    """megatron's RowParallelLinear with its matmul in FP8; its output reduction is megatron's."""

    def __init__(self, *args, fp8_scaling: str = "tensor", **kwargs):
        super().__init__(*args, **kwargs)
        self.fp8_operands = LinearOperands(fp8_scaling)
        _check_alignment(self)

    def _forward_impl(self, input, weight, bias, gradient_accumulation_fusion, **_):
        if gradient_accumulation_fusion:
            raise ValueError("native FP8 linears return weight gradients; gradient_accumulation_fusion must be off")
        out = fp8_linear(input, weight, self.fp8_operands)
        return out if bias is None else out + bias
