"""Post-hoc EMA (Karras et al. 2024, "Analyzing and Improving the Training Dynamics of Diffusion
Models", section 3): the average of the weights under a power-function profile, reconstructed after
training from saved snapshots, with its exponent chosen by validation loss.

A power-function EMA with exponent gamma, read at step T, weights the training trajectory with the
density p(tau) = (gamma + 1) tau^gamma / T^(gamma + 1) on (0, T]. Each saved snapshot is itself an
average of the trajectory under a known profile:
- a raw snapshot (`{"step", "model"}`, what the trainer writes) stands for the weights over the
  interval since the previous snapshot: a box density on (t_prev, t];
- an EMA snapshot (`{"step", "model", "ema_gamma"}`) has the power density of its gamma on (0, t].
The target profile is projected onto the span of the snapshot profiles in L2 (least squares, with
the inner products in closed form), and the weights are combined with those coefficients. For raw
snapshots alone the boxes are orthogonal and the coefficient of each is the target's mass on its
interval, ((t_i/T)^(gamma+1) - (t_{i-1}/T)^(gamma+1)).
"""
from __future__ import annotations

import csv
import math
import pathlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from megatron_video.config.errors import require


@dataclass
class EmaConfig:
    """The `ema` section of `mvideo ema`."""

    checkpoint_dir: str = ""  # empty: <run.output_dir>/snapshots
    gammas: list = field(default_factory=lambda: [1.0, 2.0, 4.0, 6.94, 10.0, 16.94, 30.0])
    output: str = ""  # empty: <run.output_dir>/ema

    def __post_init__(self) -> None:
        require(len(self.gammas) >= 1, "gammas", "needs at least one exponent")
        # Power profiles are square-integrable (their L2 products finite) only for gamma > -1/2.
        require(all(float(g) > -0.5 for g in self.gammas), "gammas", "must all be > -0.5")


def sigma_rel(gamma: float) -> float:
    """Relative standard deviation of the power profile (Karras et al. eq. 3): the width of the
    averaging window as a fraction of training time."""
    return math.sqrt((gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3)))


@dataclass(frozen=True)
class Profile:
    """The density a snapshot averages the trajectory with: a box on (start, end] when gamma is
    None, else the power density with exponent gamma on (0, end]."""

    end: float
    start: float = 0.0
    gamma: float | None = None

    def mass(self, a: float, b: float) -> float:
        """Integral of the density over (a, b]."""
        a, b = max(a, self.start), min(b, self.end)
        if b <= a:
            return 0.0
        if self.gamma is None:
            return (b - a) / (self.end - self.start)
        g = self.gamma + 1
        return (b ** g - a ** g) / self.end ** g


def inner_product(p: Profile, q: Profile) -> float:
    """L2 inner product of two profile densities, in closed form."""
    if p.gamma is None and q.gamma is None:
        overlap = max(0.0, min(p.end, q.end) - max(p.start, q.start))
        return overlap / ((p.end - p.start) * (q.end - q.start))
    if p.gamma is None:
        p, q = q, p
    if q.gamma is None:  # power p against box q: p's mass on q's interval over q's length
        return p.mass(q.start, q.end) / (q.end - q.start)
    g = p.gamma + q.gamma + 1
    m = min(p.end, q.end)
    return (p.gamma + 1) * (q.gamma + 1) * m ** g / (g * p.end ** (p.gamma + 1) * q.end ** (q.gamma + 1))


def snapshot_profiles(steps: Sequence[int], ema_gammas: Sequence[float | None]) -> list[Profile]:
    """Profiles of snapshots taken at `steps` (ascending); None marks a raw snapshot."""
    profiles, previous_raw = [], 0.0
    for step, gamma in zip(steps, ema_gammas):
        if gamma is None:
            profiles.append(Profile(end=float(step), start=previous_raw))
            previous_raw = float(step)
        else:
            profiles.append(Profile(end=float(step), gamma=float(gamma)))
    return profiles


def combination_weights(profiles: list[Profile], gamma: float, target_step: float) -> np.ndarray:
    """Least-squares coefficients x minimising || sum_i x_i profile_i - power(gamma, T) ||_2."""
    target = Profile(end=float(target_step), gamma=float(gamma))
    gram = np.array([[inner_product(p, q) for q in profiles] for p in profiles])
    rhs = np.array([inner_product(p, target) for p in profiles])
    return np.linalg.lstsq(gram, rhs, rcond=None)[0]


def _load(path: str | pathlib.Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def read_headers(checkpoint_paths: Sequence[str | pathlib.Path]) -> list[tuple[int, float | None]]:
    """(step, ema_gamma or None) of each snapshot, loading one file at a time."""
    headers = []
    for path in checkpoint_paths:
        snapshot = _load(path)
        headers.append((int(snapshot["step"]), snapshot.get("ema_gamma")))
        del snapshot
    return headers


def _combine(checkpoint_paths: Sequence[str | pathlib.Path], headers: list[tuple[int, float | None]],
             gamma: float) -> dict[str, torch.Tensor]:
    order = sorted(range(len(headers)), key=lambda i: headers[i][0])
    profiles = snapshot_profiles([headers[i][0] for i in order], [headers[i][1] for i in order])
    weights = combination_weights(profiles, gamma, headers[order[-1]][0])
    result: dict[str, torch.Tensor] = {}
    dtypes: dict[str, torch.dtype] = {}
    for weight, i in zip(weights, order):
        for name, value in _load(checkpoint_paths[i])["model"].items():
            if isinstance(value, torch.Tensor) and torch.is_floating_point(value):
                dtypes[name] = value.dtype
                result[name] = result.get(name, 0) + float(weight) * value.double()
            else:  # integer buffers and megatron's `_extra_state` entries are not averaged: keep the first
                result.setdefault(name, value)
    return {name: value.to(dtypes[name]) if name in dtypes else value for name, value in result.items()}


def posthoc_ema(checkpoint_paths: Sequence[str | pathlib.Path], steps: Sequence[int] | None,
                gamma: float) -> dict[str, torch.Tensor]:
    """The power-function EMA (exponent `gamma`) at the last snapshot's step, as a state dict.

    `steps`: the training step of each snapshot when the caller knows them (the files are then taken
    as raw snapshots, as the trainer writes them); None reads steps and `ema_gamma` markers from the
    files in a first pass. Snapshots are loaded one at a time: memory holds one of them plus the
    float64 accumulator.
    """
    headers = read_headers(checkpoint_paths) if steps is None else [(int(s), None) for s in steps]
    return _combine(checkpoint_paths, headers, gamma)


@dataclass
class SweepPoint:
    gamma: float
    sigma_rel: float
    val_loss: float


def sweep(checkpoint_paths: Sequence[str | pathlib.Path], gammas: Sequence[float],
          val_loss: Callable[[dict[str, torch.Tensor]], float]) -> tuple[list[SweepPoint], dict]:
    """Validation loss of the post-hoc EMA for each gamma; returns the points and the best weights."""
    headers = read_headers(checkpoint_paths)
    points, best, best_state = [], math.inf, None
    for gamma in gammas:
        state = _combine(checkpoint_paths, headers, float(gamma))
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
