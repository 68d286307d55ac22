"""The FP8 operands of one native FP8 linear: its weight (quantised once per optimizer step), its
input and its output gradient, each in the two layouts its GEMMs read.

A linear's three GEMMs contract different dimensions: the forward x W^T contracts the input
features, dx = dy W the output features, dw = dy^T x the tokens. So x, W and dy are each needed
row-major and transposed (the transposes' token rows padded to the GEMM alignment), and both come
from one kernel pass (kernels/fp8_cast.py) on CUDA; elsewhere the PyTorch reference of
scaling.py computes the same bits.

Scalings (train.fp8_scaling with train.fp8=native):
- "tensor": current per-tensor scaling, from this call's amax (an amax pass, then the cast).
- "delayed": per-tensor scaling from the amax history of earlier calls, as Transformer Engine's
  default recipe: a single pass that also records this call's amax. The weight, quantised once per
  step, keeps current scaling.
- "row": a scale per row of every GEMM operand along its contracted dimension.
"""
from __future__ import annotations

import torch

from megatron_video.model.fp8.scaling import (
    E4M3,
    E5M2,
    GEMM_ALIGNMENT,
    Quantized,
    pad_columns,
    power_of_two_scale,
    quantize,
    scaled_cast,
    transpose,
)
from megatron_video.model.fp8.settings import SCALINGS as MODE_SCALINGS

SCALINGS = MODE_SCALINGS["native"]
# Slots of a delayed-scaling amax history: the scale is the max over all but the two being
# written and cleared, so over this many minus two earlier calls.
HISTORY_SLOTS = 18

def use_kernels(x: torch.Tensor) -> bool:
    """Whether x is quantised by the Triton kernels (on CUDA) rather than by the PyTorch reference
    (the CPU tests patch this to run the kernels interpreted and compare the two)."""
    return x.is_cuda


def kernel_pair(x: torch.Tensor, dtype: torch.dtype, rowwise: bool) -> tuple[Quantized, Quantized]:
    """(x [rows, cols], x^T [cols, rows padded]) in FP8 with current scaling, both layouts written
    by one pass of the Triton kernels after their amax pass."""
    from kernels.fp8_cast import row_scales, tensor_scales

    quantize_both = row_scales if rowwise else tensor_scales
    return tuple(Quantized(*q) for q in quantize_both(x, dtype, True, True, GEMM_ALIGNMENT))


def reference_pair(x: torch.Tensor, dtype: torch.dtype, rowwise: bool) -> tuple[Quantized, Quantized]:
    """kernel_pair's result in eager PyTorch."""
    if rowwise:
        return quantize(x, dtype, True), pad_columns(quantize(x.t(), dtype, True))
    q = quantize(x, dtype, False)
    return q, pad_columns(transpose(q))


def _pair(x: torch.Tensor, dtype: torch.dtype, rowwise: bool) -> tuple[Quantized, Quantized]:
    return (kernel_pair if use_kernels(x) else reference_pair)(x, dtype, rowwise)


class AmaxHistory:
    """Delayed scaling's record of one tensor's amaxes (int32 bits, the kernels' format) and the
    slot the next call writes."""

    def __init__(self) -> None:
        self.bits: torch.Tensor | None = None
        self.calls = 0

    def state_dict(self) -> dict:
        return {"bits": None if self.bits is None else self.bits.clone(), "calls": self.calls}

    def load_state_dict(self, state: dict) -> None:
        self.bits = None if state["bits"] is None else state["bits"].clone()
        self.calls = state["calls"]

    def pair(self, x: torch.Tensor, dtype: torch.dtype) -> tuple[Quantized, Quantized]:
        if self.bits is None:
            self.bits, self.calls = torch.zeros(HISTORY_SLOTS, dtype=torch.int32, device=x.device), 0
        elif self.bits.device != x.device:  # a loaded history, or a model moved between devices
            self.bits = self.bits.to(x.device)
        call, self.calls = self.calls, self.calls + 1
        if use_kernels(x):
            from kernels.fp8_cast import delayed_scales

            return tuple(Quantized(*q) for q in delayed_scales(x, dtype, self.bits, call, True, True, GEMM_ALIGNMENT))
        return self._reference_pair(x, dtype, call)

    def _reference_pair(self, x: torch.Tensor, dtype: torch.dtype, call: int) -> tuple[Quantized, Quantized]:
        """delayed_scales of kernels/fp8_cast.py in eager PyTorch."""
        amax = x.abs().amax().float().view(torch.int32)
        slot = call % HISTORY_SLOTS
        if call == 0:
            self.bits[-1] = torch.maximum(self.bits[-1], amax)
        past = torch.ones(HISTORY_SLOTS, dtype=torch.bool, device=x.device)
        past[[slot, (slot + 1) % HISTORY_SLOTS]] = False
        scale = power_of_two_scale(self.bits[past].max().view(torch.float32), dtype)
        self.bits[slot] = torch.maximum(self.bits[slot], amax)
        self.bits[(slot + 1) % HISTORY_SLOTS] = 0
        q = Quantized(scaled_cast(x, scale, dtype), scale.reciprocal())
        return q, pad_columns(transpose(q))


class LinearOperands:
    """Quantises a linear's weight, input and output gradient for its FP8 GEMMs under one scaling."""

    def __init__(self, scaling: str) -> None:
        if scaling not in SCALINGS:
            raise ValueError(f"FP8 scaling must be one of {SCALINGS}, not {scaling!r}")
        self.scaling = scaling
        self.rowwise = scaling == "row"
        self._weight_key: tuple | None = None
        self._weight_updates = 0  # optimizer steps over the weight (weight_updated)
        self._weight: tuple[Quantized, Quantized] | None = None
        self._input_history, self._grad_history = AmaxHistory(), AmaxHistory()

    def weight_updated(self) -> None:
        """Mark the cached FP8 weight stale: its optimizer stepped (fp8/state.py registers this
        after each step of the model's own optimizers), and a step may write the parameter in ways
        its version counter does not see (Triton kernels, megatron's copies from its main parameters)."""
        self._weight_updates += 1

    def weight(self, weight: torch.Tensor) -> tuple[Quantized, Quantized]:
        """(W [out, in], W^T [in, out]) in e4m3, recomputed only when the parameter changed: after an
        optimizer step, an in-place write autograd sees, or a new storage. Microbatches and
        recomputed forwards of one step share it."""
        key = (weight.data_ptr(), weight._version, self._weight_updates, weight.device)
        if key != self._weight_key:
            self._weight, self._weight_key = _pair(weight.detach(), E4M3, self.rowwise), key
        return self._weight

    def input(self, x: torch.Tensor) -> tuple[Quantized, Quantized]:
        """(x [tokens, in], x^T [in, tokens padded]) in e4m3."""
        return self._activation(x, E4M3, self._input_history)

    def grad(self, dy: torch.Tensor) -> tuple[Quantized, Quantized]:
        """(dy [tokens, out], dy^T [out, tokens padded]) in e5m2."""
        return self._activation(dy, E5M2, self._grad_history)

    def amax_histories(self) -> dict:
        """Delayed scaling's state (what a checkpoint keeps so a resumed run scales as before)."""
        return {"input": self._input_history.state_dict(), "grad": self._grad_history.state_dict()}

    def load_amax_histories(self, state: dict) -> None:
        self._input_history.load_state_dict(state["input"])
        self._grad_history.load_state_dict(state["grad"])

    def _activation(self, x: torch.Tensor, dtype: torch.dtype, history: AmaxHistory) -> tuple[Quantized, Quantized]:
        if self.scaling == "delayed":
            return history.pair(x, dtype)
        return _pair(x, dtype, self.rowwise)
