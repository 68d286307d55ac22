"""VideoDiT's sharded state dict for megatron-core `dist_checkpointing`: one layout-free checkpoint.

Each entry maps this rank's local name to a ShardedTensor (or factory) whose key is the parameter's
name in the whole model, with the global layer index under pipeline parallelism, so a checkpoint
saved at one TP x PP x DP layout loads at any other. A fused tensor-parallel projection
(W_in's rows [q | k | v | g | u], W_out's columns [attention | MLP]; tp_layout.py) is a
ShardedTensorFactory that stores each segment as its own tensor, sharded over the TP ranks, so the
checkpoint holds the canonical (TP = 1) segments whatever TP size wrote or reads it. megatron's
optimizers build their moments' sharded state from these same entries.

Replica ids are (pipeline, tensor, data x context): the copy whose id is all zeros is written.
The conditioning (timestep MLP, pooled text MLP, shared modulation) lives on every pipeline stage: the first stage's
copy is the one written.
"""
from __future__ import annotations

import torch
from megatron.core import parallel_state
from megatron.core.dist_checkpointing.mapping import ShardedObject, ShardedTensor, ShardedTensorFactory

EXTRA_STATE = "_extra_state"


def global_name(model, local_name: str) -> str:
    """`blocks.i.*` of this stage as `blocks.<layer>.*` of the whole model."""
    if local_name.startswith("blocks."):
        _, index, rest = local_name.split(".", 2)
        return f"blocks.{model.layers[int(index)]}.{rest}"
    return local_name


def _fused_factory(key: str, param: torch.Tensor, dim: int, segments: list[int], replica_id: tuple,
                   tp_rank: int, tp: int) -> ShardedTensorFactory:
    """One ShardedTensor per fused segment; the segments are concatenated again on load."""
    local_sizes = [size // tp for size in segments]

    def build(key: str, tensor: torch.Tensor, replica_id, flattened_range):
        if flattened_range is not None:
            raise ValueError(f"{key}: flattened optimizer shards are not supported; use the "
                             "distributed optimizer's fully_reshardable format")
        return [ShardedTensor.from_rank_offsets(f"{key}.part{index}", part, (dim, tp_rank, tp), replica_id=replica_id)
                for index, part in enumerate(tensor.split(local_sizes, dim=dim))]

    def merge(parts: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(parts, dim=dim)

    return ShardedTensorFactory(key, param, build, merge, replica_id)


def video_dit_sharded_state_dict(model, prefix: str = "") -> dict:
    """The sharded state dict of one VideoDiT chunk (`prefix` goes on keys and local names alike)."""
    tp_rank = parallel_state.get_tensor_model_parallel_rank()
    tp = parallel_state.get_tensor_model_parallel_world_size()
    dp_rank = parallel_state.get_data_parallel_rank(with_context_parallel=True)
    layout = model.tensor_parallel_layout()
    conditioning = ("time_embed.", "pooled_text_embed.", "shared_modulation.")
    sharded = {}
    for name, value in model.state_dict(keep_vars=True).items():
        key = prefix + global_name(model, name)
        stage = 0 if model.pre_process or not name.startswith(conditioning) else 1
        if name.endswith(EXTRA_STATE):
            sharded[prefix + name] = ShardedObject(key, value, (1,), (0,), replica_id=(stage, tp_rank, dp_rank))
        elif getattr(value, "tensor_model_parallel", False) and name not in layout:
            raise ValueError(f"{name} is split over tensor-parallel ranks but not in tensor_parallel_layout()")
        elif name in layout:
            dim, segments = layout[name]
            sharded[prefix + name] = _fused_factory(key, value, dim, segments, (stage, 0, dp_rank), tp_rank, tp)
        else:
            sharded[prefix + name] = ShardedTensor.from_rank_offsets(key, value, replica_id=(stage, tp_rank, dp_rank))
    return sharded
