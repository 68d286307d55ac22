"""muP learning-rate rules (Summer-22B 4.5) and the batch/duration LR scaling helpers.

With Adam, muP keeps per-coordinate update sizes width-independent by giving matrices whose fan-in
grows with the width (hidden and output layers) an LR of base_lr * base_width / width, while
parameters whose fan-in is fixed (input projections from patches, text or timestep features) and
vector-like parameters (biases, norm gains, scalars, positional parameters) keep base_lr.
The first rule whose fnmatch pattern matches a parameter name decides its role; parameters no rule
names are hidden when they are matrices and vector-like otherwise.
"""
from __future__ import annotations

import fnmatch

import torch

from megatron_video.optim.config import OptimConfig

HIDDEN, OUTPUT, INPUT, VECTOR = "hidden", "output", "input", "vector"

MUP_RULES: tuple[tuple[str, str], ...] = (
    ("*.bias", VECTOR),
    ("*norm*", VECTOR),
    ("*value_lambdas*", VECTOR),
    ("*rope*", VECTOR),
    ("*pos_embed*", VECTOR),
    ("*patch_embed.weight", INPUT),
    ("*text_proj.mlp.0.weight", INPUT),
    ("*time_embed.mlp.0.weight", INPUT),
    ("*pooled_text_embed.mlp.0.weight", INPUT),
    ("*final_proj.weight", OUTPUT),
)

_WIDTH_SCALED = (HIDDEN, OUTPUT)


def mup_role(name: str, param: torch.Tensor) -> str:
    for pattern, role in MUP_RULES:
        if fnmatch.fnmatchcase(name, pattern):
            return role
    return HIDDEN if param.dim() >= 2 else VECTOR


def width_multiplier(name: str, param: torch.Tensor, width: int, cfg: OptimConfig) -> float:
    """base_width / width for hidden and output matrices under muP, else 1."""
    if cfg.mup and mup_role(name, param) in _WIDTH_SCALED:
        return cfg.base_width / width
    return 1.0


def layer_multiplier(name: str, cfg: OptimConfig) -> float:
    """Product of the configured layer-wise multipliers whose patterns match `name` (HPO's knobs)."""
    result = 1.0
    for pattern, multiplier in cfg.lr_multipliers().items():
        if fnmatch.fnmatchcase(name, pattern):
            result *= multiplier
    return result


def lr_multiplier(name: str, param: torch.Tensor, width: int, cfg: OptimConfig) -> float:
    """The factor on the scheduled base LR for one parameter."""
    return width_multiplier(name, param, width, cfg) * layer_multiplier(name, cfg)


def lr_for_batch_size(lr: float, batch_size: int, cfg: OptimConfig) -> float:
    """lr ~ B^a from the reference batch size."""
    return lr * (batch_size / cfg.reference_batch_size) ** cfg.lr_batch_exponent


def lr_for_duration(lr: float, steps: int, cfg: OptimConfig) -> float:
    """lr ~ T^-b from the reference run length."""
    return lr * (steps / cfg.reference_steps) ** -cfg.lr_duration_exponent


def scale_for_compute(cfg: OptimConfig, compute_multiplier: float,
                      batch_share: float = 0.5) -> tuple[int, int, float]:
    """Compute-scaling heuristic: spend `compute_multiplier` x the reference run's compute by
    growing the batch by c^s and the steps by c^(1-s) (s = batch_share), and move the LR by both
    laws. Returns (batch_size, steps, lr)."""
    if compute_multiplier <= 0 or not 0.0 <= batch_share <= 1.0:
        raise ValueError("compute_multiplier must be > 0 and batch_share in [0, 1]")
    batch = max(1, round(cfg.reference_batch_size * compute_multiplier ** batch_share))
    steps = max(1, round(cfg.reference_steps * compute_multiplier ** (1.0 - batch_share)))
    return batch, steps, lr_for_duration(lr_for_batch_size(cfg.lr, batch, cfg), steps, cfg)
