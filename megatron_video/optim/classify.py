"""Which parameters live on the unit sphere (row-wise), and how their rows sit across TP ranks."""
from __future__ import annotations

import torch
from torch import nn

from megatron_video.optim.config import OptimConfig

# Transformer Engine's linear layers, named rather than imported: TE exists only in NGC images.
_TE_LINEAR_NAMES = {"TELinear", "TEColumnParallelLinear", "TERowParallelLinear",
                    "TELayerNormColumnParallelLinear", "Linear", "LayerNormLinear"}


def _is_linear(module: nn.Module) -> bool:
    from megatron.core.tensor_parallel import ColumnParallelLinear, RowParallelLinear

    if isinstance(module, (nn.Linear, ColumnParallelLinear, RowParallelLinear)):
        return True
    return type(module).__name__ in _TE_LINEAR_NAMES and type(module).__module__.startswith(
        ("transformer_engine", "megatron.core.extensions"))


def is_excluded(name: str, cfg: OptimConfig) -> bool:
    """Excluded by name: a pattern matches when it is a substring of the dotted parameter name."""
    return any(pattern in name for pattern in cfg.sphere_exclude)


def sphere_parameters(model: nn.Module, cfg: OptimConfig) -> dict[str, nn.Parameter]:
    """{name: weight} of every 2-D linear weight kept on the sphere (empty when cfg.sphere is off).

    Embedding tables, convolutions and norms are 2-D or not but are no linear maps of activations
    whose output scale the row norm controls, so only linear layers are selected (by module type,
    which a name pattern cannot tell apart from an embedding).
    """
    if not cfg.sphere:
        return {}
    selected = {}
    for module_name, module in model.named_modules():
        if not _is_linear(module):
            continue
        weight = getattr(module, "weight", None)
        name = f"{module_name}.weight" if module_name else "weight"
        if isinstance(weight, nn.Parameter) and weight.dim() == 2 and weight.requires_grad \
                and not is_excluded(name, cfg):
            selected[name] = weight
    return selected


def rows_span_tensor_parallel(param: torch.Tensor) -> bool:
    """True for row-parallel weights: their input dimension (dim 1) is split over the TP group,
    so each rank holds a slice of every row and row norms need a TP all-reduce. Column-parallel
    weights (partition_dim 0) hold whole rows locally."""
    return bool(getattr(param, "tensor_model_parallel", False)) and getattr(param, "partition_dim", 0) == 1
