"""Base LR schedule: linear warmup -> constant -> cooldown from `cooldown_start_fraction` of the run.

This is megatron's OptimizerParamScheduler in its WSD (warmup-stable-decay) mode, so checkpoints,
per-group `max_lr`/`min_lr` (which carry the muP multipliers) and weight-decay handling are
megatron's own; the subclass adds the current base LR for logging and says how a resumed run's
schedule differs from its checkpoint's.

On resume the schedule follows the run's config and takes only the step count from the checkpoint
(megatron's `--override-opt_param-scheduler`; its default, `--use-checkpoint-opt_param-scheduler`,
keeps the checkpoint's LRs and total steps). A rerun with the same config resumes the same schedule;
a rerun with a larger `train.steps` extends it (WSD's stable phase continues up to the new cooldown),
where the checkpoint's values would have left the new steps at the old run's final LR. A run of
`train.steps=auto` is rescheduled once, when its length is planned (training/step_plan.py).
"""
from __future__ import annotations

import logging

from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

from megatron_video.optim.config import OptimConfig


def cooldown_steps(cfg: OptimConfig, total_steps: int) -> int:
    """The steps at the end of a run of `total_steps` whose LR falls (at least the last)."""
    return max(1, total_steps - round(cfg.cooldown_start_fraction * total_steps))


def cooldown_start(cfg: OptimConfig, total_steps: int) -> int:
    """The last step of the run's warmup and stable phases: the LR up to it is the same for any
    total that starts its cooldown no earlier (what a run planning its length mid-way relies on)."""
    return total_steps - cooldown_steps(cfg, total_steps)


log = logging.getLogger(__name__)

# Schedule values a checkpoint records (megatron's state_dict keys) and their names in the config.
SCHEDULE_KEYS = {"max_lr": "optim.lr", "min_lr": "optim.min_lr_fraction", "lr_warmup_steps": "optim.warmup_steps",
                 "lr_decay_steps": "train.steps"}


class WarmupConstantCooldown(OptimizerParamScheduler):
    def current_lr(self) -> float:
        """The base LR (multiplier 1) at the current step; each group's LR is this times its muP
        and layer-wise multipliers."""
        return self.get_lr({"max_lr": self.max_lr, "min_lr": self.min_lr})

    def load_state_dict(self, state_dict: dict) -> None:
        """The checkpoint's step count on this config's schedule, saying what changed."""
        changed = [f"{config_key} ({key}) {state_dict[key]} -> {getattr(self, key)}"
                   for key, config_key in SCHEDULE_KEYS.items()
                   if key in state_dict and state_dict[key] != getattr(self, key)]
        super().load_state_dict(state_dict)
        if changed:
            log.warning("resumed at step %d on this run's LR schedule, not the checkpoint's: %s; base LR now %.3g",
                        self.num_steps, ", ".join(changed), self.current_lr())


def rescheduled(scheduler: WarmupConstantCooldown, cfg: OptimConfig, total_steps: int) -> WarmupConstantCooldown:
    """The schedule of a run of `total_steps` over the same optimizer, at the step `scheduler` has
    reached (the param groups' LRs are set for it)."""
    replacement = build_scheduler(scheduler.optimizer, cfg, total_steps)
    replacement.step(scheduler.num_steps)
    return replacement


def build_scheduler(optimizer, cfg: OptimConfig, total_steps: int) -> WarmupConstantCooldown:
    """The schedule for a megatron optimizer whose param groups carry max_lr/min_lr."""
    if total_steps <= cfg.warmup_steps:
        raise ValueError(f"total_steps ({total_steps}) must exceed optim.warmup_steps ({cfg.warmup_steps})")
    return WarmupConstantCooldown(
        optimizer, init_lr=0.0, max_lr=cfg.lr, min_lr=cfg.lr * cfg.min_lr_fraction,
        lr_warmup_steps=cfg.warmup_steps, lr_decay_steps=total_steps, lr_decay_style="WSD",
        wsd_decay_steps=cooldown_steps(cfg, total_steps), lr_wsd_decay_style=cfg.cooldown_style,
        start_wd=cfg.weight_decay, end_wd=cfg.weight_decay, wd_incr_steps=total_steps,
        wd_incr_style="constant", use_checkpoint_opt_param_scheduler=False, override_opt_param_scheduler=True)
