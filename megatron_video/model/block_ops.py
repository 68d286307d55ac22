"""The DiT block's normalisation and elementwise operations, fused or not.

`call(name, fused, *args)` runs kernels/<module>.py's Triton kernel (forward and backward) when
`fused` is set and the first argument is a CUDA tensor, and the PyTorch reference of
kernels/reference.py otherwise (the CPU path). The kernel modules are imported on first use: Triton
reads TRITON_INTERPRET when a kernel is defined, and the CPU tests set it before they import them.

Under `torch.compile` the Triton path is left out of the graph (`torch.compiler.disable`): dynamo would
otherwise trace into the kernels' autograd Functions and inductor recompile their source, which it
rejects; the graph breaks around each call, and what lies between (GEMMs, reshapes) still compiles.
"""
from __future__ import annotations

import importlib

import torch

from kernels import reference

KERNEL_MODULES = {"adaln_modulate": "kernels.adaln", "rope_qk": "kernels.rope", "silu_gate": "kernels.silu_gate",
                  "concat_silu_gate": "kernels.silu_gate", "gated_residual": "kernels.gated_residual",
                  "value_mix": "kernels.value_mix"}


def call(name: str, fused: bool, first: torch.Tensor, *args):
    if fused and first.is_cuda:
        return _fused(name, first, *args)
    return getattr(reference, name)(first, *args)


@torch.compiler.disable
def _fused(name: str, first: torch.Tensor, *args):
    return getattr(importlib.import_module(KERNEL_MODULES[name]), name)(first, *args)
