"""The native FP8 linears' state outside their parameters, tied to the model that owns it.

- Weight caches: each linear keeps its weight's FP8 copy between optimizer steps. The optimizers
  that step a model's parameters mark that model's copies stale through a hook on each of them
  (never a global torch.optim hook, which would fire for every optimizer in the process: another
  model's, an HPO trial's).
- Delayed scaling's amax histories: per rank state (each rank's activations and gradient shards
  are its own), saved in checkpoints so a resumed run scales every GEMM as the uninterrupted one.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.utils.hooks import RemovableHandle

from megatron_video.model.fp8.operands import LinearOperands


def native_operands(chunks: Iterable[torch.nn.Module]) -> dict[str, LinearOperands]:
    """`chunk<i>.<module name>` -> the LinearOperands of every native FP8 linear in the chunks."""
    return {f"chunk{index}.{name}": module.fp8_operands
            for index, chunk in enumerate(chunks) for name, module in chunk.named_modules()
            if isinstance(getattr(module, "fp8_operands", None), LinearOperands)}


def refresh_weights_after_steps(optimizer: torch.optim.Optimizer,
                                chunks: Iterable[torch.nn.Module]) -> RemovableHandle | None:
    """After each step of `optimizer`, mark the FP8 weight copies of the chunks' linears stale
    (None when the chunks have no native FP8 linear)."""
    operands = list(native_operands(chunks).values())
    if not operands:
        return None

    def weights_updated(*_) -> None:
        for each in operands:
            each.weight_updated()

    return optimizer.register_step_post_hook(weights_updated)


def amax_histories(chunks: Iterable[torch.nn.Module]) -> dict[str, dict]:
    """Every delayed-scaling linear's amax histories (empty without delayed scaling)."""
    return {name: operands.amax_histories() for name, operands in native_operands(chunks).items()
            if operands.scaling == "delayed"}


def load_amax_histories(chunks: Iterable[torch.nn.Module], histories: dict[str, dict]) -> None:
    """Restore what amax_histories saved, on the same layout (the same linears on each rank)."""
    operands = {name: each for name, each in native_operands(chunks).items() if each.scaling == "delayed"}
    if operands.keys() != histories.keys():
        raise ValueError(f"the checkpoint's FP8 amax histories are for other linears: "
                         f"{sorted(histories.keys() ^ operands.keys())[:4]}")
    for name, state in histories.items():
        operands[name].load_amax_histories(state)
