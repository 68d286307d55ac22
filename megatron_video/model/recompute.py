"""Selective activation recompute (train.recompute): which part of each block keeps no activations
for backward and runs its forward again instead.

- attention: RoPE, the value residual and the attention kernel (the rotated q, k, the mixed v and
  the attention output are dropped; recomputing costs one more attention forward per block);
- mlp: the gated activation silu(g) * u;
- block: everything between a block's input and output (only the input is kept).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.checkpoint import checkpoint

RECOMPUTE = ("none", "attention", "mlp", "block")


def run_part(part: str, recompute: str, te_fp8: bool, fn: Callable, *args):
    """fn(*args), recomputed in backward when `part` is the configured recompute granularity.

    Non-reentrant checkpointing (any argument structure, no RNG bookkeeping: the blocks use no
    dropout). Under TE's FP8, TE's own checkpoint keeps the recomputed forward from updating the
    FP8 scaling state a second time.
    """
    if part != recompute or not torch.is_grad_enabled():
        return fn(*args)
    if te_fp8:
        from transformer_engine.pytorch import checkpoint as te_checkpoint

        return te_checkpoint(fn, *args, use_reentrant=False)
    return checkpoint(fn, *args, use_reentrant=False)
