"""`mvideo hpo [recipe=NAME] key=value ...`: HEBO over layer-wise LR multipliers with short runs.

Each trial trains for hpo.steps steps with optim.layer_lr_multipliers set from the suggestion, in
its own folder under the search's output; rerunning the command (e.g. with more hpo.iterations)
resumes from the saved observations.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import pathlib

DEFAULT_RECIPE = "default"
log = logging.getLogger("mvideo")


def run(cfg) -> int:
    from megatron_video.optim.hpo import run_hpo
    from megatron_video.training.trainer import train

    out_dir = pathlib.Path(cfg.hpo.output or pathlib.Path(cfg.run.output_dir) / "hpo")

    def objective(multipliers: dict[str, float], trial: int) -> float:
        trial_cfg = copy.deepcopy(cfg)
        trial_cfg.optim = dataclasses.replace(
            cfg.optim, layer_lr_multipliers=[f"{p}={m:.6g}" for p, m in multipliers.items()])
        trial_cfg.train.steps = cfg.hpo.steps
        trial_cfg.run.output_dir = str(out_dir / f"trial_{trial:03d}")
        summary = train(trial_cfg)
        log.info("hpo trial %d %s -> val_loss %.5f", trial, multipliers, summary.val_loss)
        return summary.val_loss

    trials = run_hpo(objective, cfg.hpo, out_dir)
    best = min(trials, key=lambda t: t.val_loss)
    log.info("hpo: %d trials; best trial %d val_loss %.5f with optim.layer_lr_multipliers=%s; table %s",
             len(trials), best.index, best.val_loss,
             [f"{p}={m:.3g}" for p, m in best.multipliers.items()], out_dir / "results.md")
    return 0
