"""`mvideo ema [recipe=NAME] key=value ...`: post-hoc EMA over a run's series of dist checkpoints.

Reads the complete checkpoints the run kept (checkpoint.keep_every makes the series; any TP x PP x
DP layout saved them) into one process, one at a time; sweeps the power-profile exponent
(ema.gammas), scores each average by validation loss, and writes the best as ema_best.pt (the
weights `mvideo export checkpoint.export_weights=...` and `mvideo sample` take) plus the sweep as
CSV and PNG.
"""
from __future__ import annotations

import dataclasses
import logging
import pathlib

import torch

from megatron_video.config import ConfigError

DEFAULT_RECIPE = "default"
log = logging.getLogger("mvideo")


def run(cfg) -> int:
    from megatron_video.inference.generator import load_into
    from megatron_video.model.sharded_state import EXTRA_STATE
    from megatron_video.optim.ema import Snapshot, sweep, write_sweep
    from megatron_video.parallel.state import ParallelConfig
    from megatron_video.training import checkpoint as ckpt
    from megatron_video.training.build import build_components, start_layout
    from megatron_video.training.environment import resolve_device, resolve_dtype
    from megatron_video.training.evaluate import validation_loss_of

    run_dir = pathlib.Path(cfg.run.output_dir)
    series = ckpt.complete_checkpoints(pathlib.Path(cfg.ema.checkpoint_dir or run_dir / "checkpoints"))
    if not series:
        raise ConfigError("ema.checkpoint_dir", f"no complete dist checkpoints in {cfg.ema.checkpoint_dir or run_dir}"
                                                " (train with checkpoint.keep_every > 0 to keep a series)")
    cfg = dataclasses.replace(cfg, parallel=ParallelConfig())  # one process holds the whole model
    device = resolve_device(cfg.run.device)
    start_layout(cfg, device)
    parts = build_components(cfg, device, run_dir, encode_inline=cfg.data.encodes_inline)
    model = parts.model

    def reader(path: pathlib.Path):
        def read() -> dict[str, torch.Tensor]:
            ckpt.load_model_weights([model], path)  # resharded from the saving layout
            return {name: value for name, value in model.state_dict().items() if not name.endswith(EXTRA_STATE)}
        return read

    def score(state: dict[str, torch.Tensor]) -> float:
        load_into(model, state, series[-1])
        model.eval()
        return validation_loss_of([model], parts, cfg, resolve_dtype(cfg.train.precision, device))

    snapshots = [Snapshot(ckpt.checkpoint_step(path), reader(path)) for path in series]
    points, best_state = sweep(snapshots, cfg.ema.gammas, score)
    out_dir = pathlib.Path(cfg.ema.output or run_dir / "ema")
    table, plot = write_sweep(points, out_dir)
    best = min(points, key=lambda p: p.val_loss)
    checkpoint = out_dir / "ema_best.pt"
    torch.save({"step": snapshots[-1].step, "model": best_state, "ema_gamma": best.gamma,
                "sigma_rel": best.sigma_rel, "series": [p.name for p in series]}, checkpoint)
    for p in points:
        log.info("ema gamma=%g sigma_rel=%.4f val_loss=%.5f", p.gamma, p.sigma_rel, p.val_loss)
    log.info("best gamma=%g (sigma_rel %.4f, val_loss %.5f) from %d checkpoints (steps %s) -> %s; sweep %s, %s",
             best.gamma, best.sigma_rel, best.val_loss, len(series), [s.step for s in snapshots], checkpoint,
             table, plot)
    return 0
