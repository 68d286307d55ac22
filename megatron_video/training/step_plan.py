"""`train.steps=auto`: the run's length planned from its measured step rate, so that the run, LR
cooldown included, ends within `train.time_limit_s` whatever the machine's speed or load.

Until the plan is made the run follows the schedule of `train.max_steps`. After
`train.plan_after_steps` untimed steps of the job (the loader's start, the first caption encodings)
and `train.plan_measure_steps` timed ones, the steps that fit into what is left of the time limit,
less `train.plan_margin` of it (for validation, checkpoints and slower steps later), fix the total,
clamped to [`fewest_planned_steps`, `train.max_steps`]. The fewest a plan may choose start their
cooldown no earlier than the step the plan is made at, so every LR applied so far is also that of
the planned schedule (warmup and stable phases do not depend on the total): the rescheduled run is
a run of the planned length from its start. The total goes into every checkpoint; a resumed run
follows it and plans nothing, so a resumed run repeats an uninterrupted one exactly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist

from megatron_video.config.errors import ConfigError
from megatron_video.config.run import TrainConfig
from megatron_video.optim.config import OptimConfig
from megatron_video.optim.schedule import cooldown_start


def fewest_planned_steps(optim: OptimConfig, step: int, min_steps: int) -> int:
    """The fewest steps a plan made at `step` may choose: more than `step` and than the warmup, at
    least `min_steps`, with the cooldown starting at `step` or later."""
    total = max(step + 1, optim.warmup_steps + 1, min_steps)
    while cooldown_start(optim, total) < step:  # cooldown_start grows with the total
        total += 1
    return total


def planned_total(step: int, seconds_left: float, s_per_step: float, margin: float, fewest: int, most: int) -> int:
    """`step` plus the steps of `s_per_step` that fit into `seconds_left` less its `margin`
    fraction, clamped to [fewest, most] (`most` wins where they cross)."""
    fit = step + math.floor(max(seconds_left, 0.0) * (1.0 - margin) / s_per_step) if s_per_step > 0 else most
    return min(max(fit, fewest), most)


@dataclass(frozen=True)
class StepPlan:
    total: int
    step: int  # the step it was made at
    s_per_step: float  # measured over the timed steps (the slowest rank's)
    timed_steps: int
    seconds_left: float  # of the time limit, when it was made
    fewest: int
    most: int

    def describe(self, train: TrainConfig) -> str:
        """The one log line that says what was planned and from what (grep 'step plan:')."""
        return (f"step plan: train.steps={self.total}, planned at step {self.step} from {self.s_per_step:.4f} s/step "
                f"over {self.timed_steps} timed steps; {self.seconds_left:.1f} s of train.time_limit_s="
                f"{train.time_limit_s:g} left, {train.plan_margin:.0%} of it kept; bounds {self.fewest}..{self.most}")


def check_step_plan(train: TrainConfig, optim: OptimConfig) -> None:
    """Refuse a planned run whose bounds leave no plan possible (before any work)."""
    if not train.planned:
        return
    plan_step = train.plan_after_steps + train.plan_measure_steps
    fewest = fewest_planned_steps(optim, plan_step, train.min_steps)
    if fewest > train.max_steps:
        raise ConfigError("train.max_steps", f"{train.max_steps} is below the fewest steps ({fewest}) a plan made at "
                                             f"step {plan_step} (train.plan_after_steps + train.plan_measure_steps) "
                                             f"may choose: above optim.warmup_steps and train.min_steps, with its "
                                             f"cooldown (optim.cooldown_start_fraction) starting after the plan")


class StepPlanner:
    """Times one job's steps and makes its plan once, at the same step and to the same total on
    every rank (each rank's timings, their maximum)."""

    def __init__(self, train: TrainConfig, optim: OptimConfig, start_step: int, started_at: float):
        self.train, self.optim = train, optim
        self.timed_from = start_step + train.plan_after_steps
        self.plan_at = self.timed_from + train.plan_measure_steps
        self.started_at = started_at
        self.timed_from_at = started_at  # replaced at the end of step `timed_from` (none when it is the start)

    def observe(self, step: int, now: float, device: torch.device) -> StepPlan | None:
        """Called with the clock after each step; the plan at step `plan_at`, else None."""
        if step == self.timed_from:
            self.timed_from_at = now
        if step != self.plan_at:
            return None
        timings = torch.tensor([now - self.timed_from_at, now - self.started_at], dtype=torch.float64, device=device)
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(timings, op=dist.ReduceOp.MAX)
        timed_s, elapsed_s = timings.tolist()
        s_per_step = timed_s / self.train.plan_measure_steps
        seconds_left = self.train.time_limit_s - elapsed_s
        fewest = fewest_planned_steps(self.optim, step, self.train.min_steps)
        total = planned_total(step, seconds_left, s_per_step, self.train.plan_margin, fewest, self.train.max_steps)
        return StepPlan(total, step, s_per_step, self.train.plan_measure_steps, seconds_left, fewest,
                        self.train.max_steps)
