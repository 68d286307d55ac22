"""The `optim` section: sphere AdamW, muP learning rates, schedule, clipping, muP-band checks."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from megatron_video.config.errors import require

COOLDOWN_STYLES = ("linear", "cosine", "exponential", "minus_sqrt")  # megatron's WSD decay styles


def parse_lr_multipliers(value: Any) -> dict[str, float]:
    """`{"*attn*": 2.0}` or `["*attn*=2.0", ...]` (the form HPO and CLI overrides write) -> dict."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return {str(k): float(v) for k, v in value.items()}
    parsed = {}
    for item in value:
        pattern, sep, mult = str(item).rpartition("=")
        if not sep or not pattern:
            raise ValueError(f"'{item}' is not written pattern=multiplier")
        parsed[pattern] = float(mult)
    return parsed


@dataclass
class OptimConfig:
    """Hyperparameters of the optimiser; `lr` is the base LR at `base_width` (muP transfers it)."""

    lr: float = 3e-3
    betas: list = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    weight_decay: float = 0.0  # unconstrained matrices only; sphere rows, biases and norms get none
    warmup_steps: int = 100
    cooldown_start_fraction: float = 0.98
    cooldown_style: str = "linear"
    min_lr_fraction: float = 0.0
    sphere: bool = True
    sphere_exclude: list = field(default_factory=lambda: ["final_proj", "modulation.2", "dconv.weight"])
    mup: bool = True
    base_width: int = 256
    lr_batch_exponent: float = 0.5  # lr ~ B^a
    lr_duration_exponent: float = 0.5  # lr ~ T^-b
    reference_batch_size: int = 256
    reference_steps: int = 10_000
    clip_grad: float = 1.0  # 0 disables clipping
    # ["pattern=mult", ...] (the form YAML, CLI overrides and HPO use; a {pattern: mult} dict also
    # works from Python). Multipliers of all matching fnmatch patterns multiply.
    layer_lr_multipliers: Any = field(default_factory=list)
    band_check_every: int = 1000
    band_tolerance: float = 8.0  # a layer warns beyond this factor from its muP band centre
    band_exempt: list = field(default_factory=lambda: ["modulation"])
    # The step through the Triton kernels of kernels/sphere_adamw.py wherever the parameters are on
    # CUDA (false: the PyTorch reference, the only path on CPU).
    fused_kernels: bool = True

    def __post_init__(self) -> None:
        require(self.lr > 0, "lr", "must be > 0")
        require(len(self.betas) == 2 and all(0.0 <= b < 1.0 for b in self.betas), "betas",
                "must be two numbers in [0, 1)")
        require(self.eps > 0, "eps", "must be > 0")
        require(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        require(self.warmup_steps >= 0, "warmup_steps", "must be >= 0")
        require(0.0 < self.cooldown_start_fraction <= 1.0, "cooldown_start_fraction", "must be in (0, 1]")
        require(self.cooldown_style in COOLDOWN_STYLES, "cooldown_style",
                f"must be one of {', '.join(COOLDOWN_STYLES)}")
        require(0.0 <= self.min_lr_fraction <= 1.0, "min_lr_fraction", "must be in [0, 1]")
        require(all(isinstance(p, str) and p for p in self.sphere_exclude), "sphere_exclude",
                "must be a list of non-empty name patterns")
        require(self.base_width >= 1, "base_width", "must be >= 1")
        require(self.reference_batch_size >= 1, "reference_batch_size", "must be >= 1")
        require(self.reference_steps >= 1, "reference_steps", "must be >= 1")
        require(self.clip_grad >= 0, "clip_grad", "must be >= 0 (0 disables clipping)")
        require(self.band_check_every >= 1, "band_check_every", "must be >= 1")
        require(self.band_tolerance > 1.0, "band_tolerance", "must be > 1")
        try:
            multipliers = parse_lr_multipliers(self.layer_lr_multipliers)
        except (TypeError, ValueError) as err:
            require(False, "layer_lr_multipliers", str(err))
        require(all(m > 0 for m in multipliers.values()), "layer_lr_multipliers", "must all be > 0")

    def lr_multipliers(self) -> dict[str, float]:
        """The layer-wise LR multipliers as {fnmatch pattern on parameter names: multiplier}."""
        return parse_lr_multipliers(self.layer_lr_multipliers)
