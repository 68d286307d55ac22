"""`mvideo ema [recipe=NAME] key=value ...`: post-hoc EMA over a run's snapshots.

Sweeps the power-profile exponent (ema.gammas) over the step_*.pt snapshots, scores each average
by validation loss, and writes the best as a checkpoint plus the sweep as CSV and PNG.
"""
from __future__ import annotations

import logging
import pathlib

import torch

from megatron_video.config import ConfigError

DEFAULT_RECIPE = "default"
log = logging.getLogger("mvideo")


def run(cfg) -> int:
    from megatron_video.optim.ema import sweep, write_sweep
    from megatron_video.training.evaluate import validation_loss

    run_dir = pathlib.Path(cfg.run.output_dir)
    snapshot_dir = pathlib.Path(cfg.ema.checkpoint_dir or run_dir / "snapshots")
    paths = sorted(snapshot_dir.glob("step_*.pt"))
    if not paths:
        raise ConfigError("ema.checkpoint_dir", f"no step_*.pt snapshots in {snapshot_dir} "
                                                "(train with train.snapshot_every > 0)")
    points, best_state = sweep(paths, cfg.ema.gammas, lambda state: validation_loss(cfg, state))
    out_dir = pathlib.Path(cfg.ema.output or run_dir / "ema")
    table, plot = write_sweep(points, out_dir)
    best = min(points, key=lambda p: p.val_loss)
    last_step = int(paths[-1].stem.split("_")[1])
    # Marked with its exponent: placed among snapshots it counts as an EMA snapshot, not a raw one.
    checkpoint = out_dir / "ema_best.pt"
    torch.save({"step": last_step, "model": best_state, "ema_gamma": best.gamma, "sigma_rel": best.sigma_rel},
               checkpoint)
    for p in points:
        log.info("ema gamma=%g sigma_rel=%.4f val_loss=%.5f", p.gamma, p.sigma_rel, p.val_loss)
    log.info("best gamma=%g (sigma_rel %.4f, val_loss %.5f) from %d snapshots -> %s; sweep %s, %s",
             best.gamma, best.sigma_rel, best.val_loss, len(paths), checkpoint, table, plot)
    return 0
