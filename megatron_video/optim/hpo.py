"""HEBO search over layer-wise LR multipliers (Summer-22B 4.6), resumable from its saved observations.

Each trial sets one multiplier per name pattern (optim.layer_lr_multipliers, searched in log2
space) and returns a validation loss from a short run. Every finished trial is appended to
observations.csv at once; a later run with the same output folder feeds those rows back to HEBO and
only runs the trials still missing, so an interrupted or extended search loses nothing.
"""
from __future__ import annotations

import csv
import math
import pathlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from megatron_video.config.errors import require

OBSERVATIONS = "observations.csv"


@dataclass
class HpoConfig:
    """The `hpo` section of `mvideo hpo`."""

    iterations: int = 20  # trials in total, counting those already saved
    initial_random: int = 4  # quasi-random trials before HEBO's model takes over
    patterns: list = field(default_factory=lambda: [
        "patch_embed.*", "text_proj.*", "time_embed.*", "pooled_text_embed.*", "blocks.*", "*modulation*",
        "final_proj.*"])
    log2_low: float = -3.0
    log2_high: float = 3.0
    steps: int = 200  # training steps of each trial run
    output: str = ""  # empty: <run.output_dir>/hpo
    seed: int = 0

    def __post_init__(self) -> None:
        require(self.iterations >= 1, "iterations", "must be >= 1")
        require(self.initial_random >= 1, "initial_random", "must be >= 1")
        require(len(self.patterns) >= 1 and len(set(self.patterns)) == len(self.patterns), "patterns",
                "needs one or more distinct name patterns")
        require(self.log2_low < self.log2_high, "log2_low", "must be below log2_high")
        require(self.steps >= 1, "steps", "must be >= 1")


@dataclass
class Trial:
    index: int
    multipliers: dict[str, float]
    val_loss: float


def _space(hpo: HpoConfig):
    from hebo.design_space.design_space import DesignSpace

    return DesignSpace().parse([{"name": f"m{i}", "type": "num", "lb": hpo.log2_low, "ub": hpo.log2_high}
                                for i in range(len(hpo.patterns))])


def load_trials(out_dir: pathlib.Path, hpo: HpoConfig) -> list[Trial]:
    path = out_dir / OBSERVATIONS
    if not path.exists():
        return []
    with path.open() as f:
        rows = list(csv.DictReader(f))
    trials = []
    for row in rows:
        if set(hpo.patterns) - set(row):
            raise ValueError(f"{path} was written for other patterns than {hpo.patterns}")
        trials.append(Trial(int(row["trial"]), {p: float(row[p]) for p in hpo.patterns}, float(row["val_loss"])))
    return trials


def _append(out_dir: pathlib.Path, hpo: HpoConfig, trial: Trial) -> None:
    path = out_dir / OBSERVATIONS
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(["trial", *hpo.patterns, "val_loss"])
        writer.writerow([trial.index, *(trial.multipliers[p] for p in hpo.patterns), trial.val_loss])


def _observed_losses(trials: list[Trial]) -> np.ndarray:
    """Losses as HEBO sees them: a failed (non-finite) trial counts as 10x the worst finite one."""
    losses = np.array([t.val_loss for t in trials], dtype=float)
    finite = losses[np.isfinite(losses)]
    penalty = 10.0 * float(np.abs(finite).max()) if finite.size else 1e6
    return np.where(np.isfinite(losses), losses, penalty).reshape(-1, 1)


def run_hpo(objective: Callable[[dict[str, float], int], float], hpo: HpoConfig,
            out_dir: str | pathlib.Path) -> list[Trial]:
    """Run trials until `hpo.iterations` exist in out_dir (earlier ones are reloaded, not rerun).
    `objective(multipliers, trial_index)` returns the validation loss of one short run."""
    import pandas as pd
    import torch
    from hebo.optimizers.hebo import HEBO

    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    trials = load_trials(out_dir, hpo)
    optimizer = HEBO(_space(hpo), rand_sample=hpo.initial_random, scramble_seed=hpo.seed)
    names = [f"m{i}" for i in range(len(hpo.patterns))]
    if trials:
        optimizer.observe(pd.DataFrame([[math.log2(t.multipliers[p]) for p in hpo.patterns] for t in trials],
                                       columns=names), _observed_losses(trials))
    while len(trials) < hpo.iterations:
        index = len(trials)
        # Seeded per trial index: a resumed search suggests what an uninterrupted one would have.
        np.random.seed(hpo.seed + index)
        torch.manual_seed(hpo.seed + index)
        suggestion = optimizer.suggest(n_suggestions=1)
        multipliers = {p: float(2.0 ** suggestion[n].iloc[0]) for p, n in zip(hpo.patterns, names)}
        trial = Trial(index, multipliers, float(objective(multipliers, index)))
        trials.append(trial)
        _append(out_dir, hpo, trial)
        optimizer.observe(suggestion, _observed_losses(trials)[-1:])
    write_report(trials, hpo, out_dir)
    return trials


def write_report(trials: list[Trial], hpo: HpoConfig, out_dir: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """results.md (trials ranked by validation loss) and convergence.png (loss and best so far)."""
    from megatron_video.plots import plt, save_figure

    ranked = sorted(trials, key=lambda t: (not math.isfinite(t.val_loss), t.val_loss))
    lines = ["| rank | trial | " + " | ".join(f"`{p}`" for p in hpo.patterns) + " | val_loss |",
             "|" + "---|" * (len(hpo.patterns) + 3)]
    lines += [f"| {r} | {t.index} | " + " | ".join(f"{t.multipliers[p]:.3g}" for p in hpo.patterns)
              + f" | {t.val_loss:.5g} |" for r, t in enumerate(ranked, start=1)]
    table = out_dir / "results.md"
    table.write_text("\n".join(lines) + "\n")
    losses = [t.val_loss for t in trials]
    best = np.minimum.accumulate([v if math.isfinite(v) else np.inf for v in losses])
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(range(len(losses)), losses, "o", label="trial")
    ax.plot(range(len(losses)), best, "-", label="best so far")
    ax.axvline(hpo.initial_random - 0.5, color="0.7", linestyle=":", label="end of random start")
    ax.set_xlabel("trial")
    ax.set_ylabel("validation loss")
    ax.legend()
    return table, save_figure(fig, out_dir / "convergence.png")
