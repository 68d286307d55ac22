"""The tensor-parallel linear classes and megatron TransformerConfig fields for each FP8 mode.

off: megatron-core's ColumnParallelLinear / RowParallelLinear. te: megatron-core's TE wrappers
(TEColumnParallelLinear / TERowParallelLinear); FP8 is switched on by the TransformerConfig's fp8
fields and megatron's `get_fp8_context`, which builds TE's recipe (delayed scaling with an amax
history, current per-tensor scaling, or MXFP8 blocks) and the amax-reduction group. native: the
`torch._scaled_mm` layers of linear.py. All take the same constructor arguments and return
(output, bias), so the blocks build them through one call.
"""
from __future__ import annotations

import functools
from collections.abc import Callable

from megatron_video.model.fp8.settings import Fp8Settings

# megatron's fp8_recipe names for TE's recipes.
TE_RECIPES = {"delayed": "delayed", "current": "tensorwise", "mxfp8": "mxfp8"}


def transformer_config_fields(settings: Fp8Settings) -> dict:
    """TransformerConfig keyword arguments that turn TE's FP8 on (none for the other modes).

    HYBRID format: e4m3 forward, e5m2 gradients. Delayed scaling keeps NeMo's defaults, the max over
    an amax history of 1024 steps.
    """
    if settings.mode != "te":
        return {}
    fields = {"fp8": "hybrid", "fp8_recipe": TE_RECIPES[settings.resolved_scaling]}
    if settings.resolved_scaling == "delayed":
        fields.update(fp8_amax_history_len=1024, fp8_amax_compute_algo="max")
    return fields


def parallel_linear_classes(settings: Fp8Settings) -> tuple[Callable, Callable]:
    """(column-parallel class, row-parallel class) for the FP8 mode."""
    if settings.mode == "te":
        from megatron.core.extensions.transformer_engine import TEColumnParallelLinear, TERowParallelLinear

        return TEColumnParallelLinear, TERowParallelLinear
    if settings.mode == "native":
        from megatron_video.model.fp8.linear import Fp8ColumnParallelLinear, Fp8RowParallelLinear

        scaling = settings.resolved_scaling
        return (functools.partial(Fp8ColumnParallelLinear, fp8_scaling=scaling),
                functools.partial(Fp8RowParallelLinear, fp8_scaling=scaling))
    from megatron.core.tensor_parallel import ColumnParallelLinear, RowParallelLinear

    return ColumnParallelLinear, RowParallelLinear
