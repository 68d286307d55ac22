"""The layouts a group of ranks can sample with, checked before any work (`mvideo sample`, `serve`).

Every rank of the world samples the same request. Tensor and context parallelism split the model's
forward (the CP attention of megatron_video/parallel, which pads the joint sequence to a multiple of
the CP size and masks the padding); the data-parallel dimension has one use, CFG parallel, which
puts the conditional and negative branches on its two halves. Pipeline stages would pass each
step's activations through megatron's schedules, which sampling does not drive.
"""
from __future__ import annotations

from megatron_video.config import require
from megatron_video.config.schema import RootConfig
from megatron_video.parallel.layout import Layout, validate_layout


def validate_sampling_layout(cfg: RootConfig, world_size: int) -> Layout:
    """The Layout `cfg` samples with on `world_size` ranks, or a ConfigError naming the key."""
    layout = validate_layout(cfg.parallel, cfg.model, world_size)
    require(layout.pipeline == 1, "parallel.pipeline",
            "sampling runs the whole model on each rank: set it to 1 (use parallel.context or parallel.tensor "
            "to split a long video over GPUs)")
    model_parallel = layout.tensor * layout.context
    if cfg.sample.cfg_parallel:
        require(layout.data == 2, "sample.cfg_parallel",
                f"puts the two guidance branches on two halves of the world, so it needs "
                f"2 x tensor x context = {2 * model_parallel} ranks; {world_size} were launched")
    else:
        require(layout.data == 1, "sample.cfg_parallel",
                f"is false, so every one of the {world_size} ranks would sample the same branches while "
                f"tensor x context uses {model_parallel}: set sample.cfg_parallel=true with "
                f"{2 * model_parallel} ranks, or launch {model_parallel}")
    return layout
