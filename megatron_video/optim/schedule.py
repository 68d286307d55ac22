"""Base LR schedule: linear warmup -> constant -> cooldown from `cooldown_start_fraction` of the run.

This is megatron's OptimizerParamScheduler in its WSD (warmup-stable-decay) mode, so checkpoints,
per-group `max_lr`/`min_lr` (which carry the muP multipliers) and weight-decay handling are
megatron's own; the subclass only adds the current base LR for logging.
"""
from __future__ import annotations

from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

from megatron_video.optim.config import OptimConfig


def cooldown_steps(cfg: OptimConfig, total_steps: int) -> int:
    return total_steps - round(cfg.cooldown_start_fraction * total_steps)


class WarmupConstantCooldown(OptimizerParamScheduler):
    def current_lr(self) -> float:
        """The base LR (multiplier 1) at the current step; each group's LR is this times its muP
        and layer-wise multipliers."""
        return self.get_lr({"max_lr": self.max_lr, "min_lr": self.min_lr})


def build_scheduler(optimizer, cfg: OptimConfig, total_steps: int) -> WarmupConstantCooldown:
    """The schedule for a megatron optimizer whose param groups carry max_lr/min_lr."""
    if total_steps <= cfg.warmup_steps:
        raise ValueError(f"total_steps ({total_steps}) must exceed optim.warmup_steps ({cfg.warmup_steps})")
    return WarmupConstantCooldown(
        optimizer, init_lr=0.0, max_lr=cfg.lr, min_lr=cfg.lr * cfg.min_lr_fraction,
        lr_warmup_steps=cfg.warmup_steps, lr_decay_steps=total_steps, lr_decay_style="WSD",
        wsd_decay_steps=max(1, cooldown_steps(cfg, total_steps)), lr_wsd_decay_style=cfg.cooldown_style,
        start_wd=cfg.weight_decay, end_wd=cfg.weight_decay, wd_incr_steps=total_steps,
        wd_incr_style="constant")
