"""Parameter counts of VideoDiT from its config, per tensor-parallel rank and per pipeline stage.

Counted layer by layer from the modules of megatron_video/model (their Linear shapes and biases),
so that at tensor = pipeline = 1 the total equals `sum(p.numel())` of a built model exactly.
Column-parallel and row-parallel weights (the block projections) are split over the TP group;
everything else (embeddings, modulation MLPs, value-residual lambdas, the final layer) is replicated.
"""
from __future__ import annotations

from dataclasses import dataclass

from megatron_video.model.config import VideoDiTConfig

PARALLEL_MODULATIONS = 3
SEQUENTIAL_MODULATIONS = 6


def linear(fan_in: int, fan_out: int, bias: bool = True) -> int:
    return fan_in * fan_out + (fan_out if bias else 0)


def modulation(hidden: int, inner: int, outputs: int) -> int:
    """embeddings.modulation_mlp: Linear(hidden, inner), SiLU, Linear(inner, outputs * hidden)."""
    return linear(hidden, inner) + linear(inner, outputs * hidden)


def modulations_per_block(cfg: VideoDiTConfig) -> int:
    return PARALLEL_MODULATIONS if cfg.block == "parallel" else SEQUENTIAL_MODULATIONS


@dataclass(frozen=True)
class BlockParameters:
    """One block's parameters: `split` are divided over the TP group, `replicated` are not."""

    split: int
    replicated: int

    def local(self, tensor: int) -> int:
        return self.split // tensor + self.replicated


def block_parameters(cfg: VideoDiTConfig, layer: int) -> BlockParameters:
    h, m = cfg.hidden, cfg.mlp_hidden
    if cfg.block == "parallel":
        split = h * (3 * h + 2 * m) + (h + m) * h  # w_in, w_out (no biases)
    else:
        split = 3 * h * h + h * h + 2 * m * h + m * h  # qkv, attn_out, fc1, fc2
    replicated = modulation(h, cfg.adaln_lora_rank or h, modulations_per_block(cfg))
    if cfg.value_residual and layer > 0:
        replicated += 2  # (l1, l2)
    return BlockParameters(split, replicated)


def embedding_parameters(cfg: VideoDiTConfig) -> int:
    """Patch embedding, text projection, timestep MLP, pooled text MLP and the shared AdaLN-LoRA
    modulation (first stage)."""
    h = cfg.hidden
    count = linear(cfg.patch_dim, h) + linear(cfg.text_dim, h) + linear(h, h) \
        + linear(cfg.timestep_dim, h) + linear(h, h)
    if cfg.pooled_text_conditioning:
        count += linear(cfg.text_dim, h) + linear(h, h)
    if cfg.adaln_lora_rank:
        count += modulation(h, h, modulations_per_block(cfg))
    return count


def final_parameters(cfg: VideoDiTConfig) -> int:
    """Final modulation and projection back to patches (last stage)."""
    return modulation(cfg.hidden, cfg.hidden, 2) + linear(cfg.hidden, cfg.patch_dim)


def total_parameters(cfg: VideoDiTConfig) -> int:
    blocks = sum(b.split + b.replicated for b in (block_parameters(cfg, i) for i in range(cfg.layers)))
    return embedding_parameters(cfg) + blocks + final_parameters(cfg)


def stage_layers(cfg: VideoDiTConfig, pipeline: int, stage: int) -> range:
    """Layers of pipeline stage `stage`: contiguous, the first stages take one more when L % pp != 0."""
    base, extra = divmod(cfg.layers, pipeline)
    start = stage * base + min(stage, extra)
    return range(start, start + base + (1 if stage < extra else 0))


@dataclass(frozen=True)
class StageParameters:
    """Parameters one GPU holds: its stage's blocks (its TP share of them) and the stage's extras."""

    stage: int
    layers: int
    count: int
    tensor_parallel: int  # of `count`, the parameters split over TP (block projections)


def stage_parameters(cfg: VideoDiTConfig, tensor: int, pipeline: int, stage: int) -> StageParameters:
    layers = stage_layers(cfg, pipeline, stage)
    blocks = [block_parameters(cfg, i) for i in layers]
    count = sum(b.local(tensor) for b in blocks)
    if stage == 0:
        count += embedding_parameters(cfg)
    if stage == pipeline - 1:
        count += final_parameters(cfg)
    return StageParameters(stage, len(layers), count, sum(b.split // tensor for b in blocks))


def tensor_parallel_ok(cfg: VideoDiTConfig, tensor: int) -> bool:
    """The block's split dimensions (heads, MLP width) divide by the TP size."""
    return cfg.heads % tensor == 0 and cfg.mlp_hidden % tensor == 0
