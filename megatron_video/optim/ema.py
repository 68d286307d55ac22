"""Post-hoc EMA (Karras et al. 2024, "Analyzing and Improving the Training Dynamics of Diffusion
Models", section 3): the average of the weights under a power-function profile, reconstructed after
training from the run's series of saved weights, with its exponent chosen by validation loss.

A power-function EMA with exponent gamma, read at step T, weights the training trajectory with the
density p(tau) = (gamma + 1) tau^gamma / T^(gamma + 1) on (0, T]. A saved checkpoint at step t_i
stands for the weights over the interval since the one before, (t_{i-1}, t_i] (t_0 = 0), so its
coefficient is the profile's mass there, (t_i / T)^(gamma + 1) - (t_{i-1} / T)^(gamma + 1); the
coefficients sum to 1. The series is read one snapshot at a time into a float64 accumulator, so
memory holds one snapshot plus the accumulator whatever the length of the series.
"""
from __future__ import annotations

import csv
import itertools
import math
import pathlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from megatron_video.config.errors import require


@dataclass
class EmaConfig:
    """The `ema` section of `mvideo ema`."""

    checkpoint_dir: str = ""  # the dist-checkpoint series; empty: <run.output_dir>/checkpoints
    gammas: list = field(default_factory=lambda: [1.0, 2.0, 4.0, 6.94, 10.0, 16.94, 30.0])
    output: str = ""  # empty: <run.output_dir>/ema

    def __post_init__(self) -> None:
        require(len(self.gammas) >= 1, "gammas", "needs at least one exponent")
        # A power profile is a density (finite mass near 0) only for gamma > -1.
        require(all(float(g) > -1 for g in self.gammas), "gammas", "must all be > -1")


def sigma_rel(gamma: float) -> float:
    """Relative standard deviation of the power profile (Karras et al. eq. 3): the width of the
    averaging window as a fraction of training time."""
    return math.sqrt((gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3)))


@dataclass(frozen=True)
class Snapshot:
    """The weights at one training step, read only when asked (`read` returns a state dict whose
    tensors may be overwritten by the next read: they are consumed before it)."""

    step: int
    read: Callable[[], Mapping[str, torch.Tensor]]


def power_weights(steps: Sequence[int], gamma: float) -> list[float]:
    """Coefficient of each snapshot (steps ascending) in the power-function EMA at the last step."""
    total, g = float(steps[-1]), gamma + 1
    return [(b / total) ** g - (a / total) ** g for a, b in itertools.pairwise([0, *steps])]


def posthoc_ema(snapshots: Sequence[Snapshot], gamma: float) -> dict[str, torch.Tensor]:
    """The power-function EMA (exponent `gamma`) at the last snapshot's step, as a state dict.
    Floating-point tensors are averaged in float64 and returned in their own dtype; other entries
    (integer buffers) are the newest snapshot's."""
    ordered = sorted(snapshots, key=lambda s: s.step)
    sums: dict[str, torch.Tensor] = {}
    dtypes: dict[str, torch.dtype] = {}
    newest: dict[str, torch.Tensor] = {}
    for weight, snapshot in zip(power_weights([s.step for s in ordered], gamma), ordered):
        for name, value in snapshot.read().items():
            if not torch.is_floating_point(value):
                newest[name] = value.clone()
            elif name in sums:
                sums[name].add_(value.detach(), alpha=weight)
            else:
                dtypes[name] = value.dtype
                sums[name] = value.detach().double() * weight
    return {**newest, **{name: total.to(dtypes[name]) for name, total in sums.items()}}


@dataclass
class SweepPoint:
    gamma: float
    sigma_rel: float
    val_loss: float


def sweep(snapshots: Sequence[Snapshot], gammas: Sequence[float],
          val_loss: Callable[[dict[str, torch.Tensor]], float]) -> tuple[list[SweepPoint], dict]:
    """Validation loss of the post-hoc EMA for each gamma (one pass over the series each); returns
    the points and the best weights."""
    points, best, best_state = [], math.inf, None
    for gamma in gammas:
        state = posthoc_ema(snapshots, float(gamma))
        loss = float(val_loss(state))
        points.append(SweepPoint(float(gamma), sigma_rel(float(gamma)), loss))
        if loss < best:
            best, best_state = loss, state
    return points, best_state


def write_sweep(points: list[SweepPoint], out_dir: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """sweep.csv and sweep.png (validation loss against sigma_rel, best marked)."""
    from megatron_video.plots import plt, save_figure

    out_dir.mkdir(parents=True, exist_ok=True)
    table = out_dir / "sweep.csv"
    with table.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["gamma", "sigma_rel", "val_loss"])
        writer.writerows([[p.gamma, p.sigma_rel, p.val_loss] for p in points])
    best = min(points, key=lambda p: p.val_loss)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([p.sigma_rel for p in points], [p.val_loss for p in points], "o-")
    ax.plot([best.sigma_rel], [best.val_loss], "r*", markersize=12, label=f"best gamma={best.gamma:g}")
    ax.set_xscale("log")
    ax.set_xlabel("sigma_rel (EMA length)")
    ax.set_ylabel("validation loss")
    ax.legend()
    return table, save_figure(fig, out_dir / "sweep.png")
