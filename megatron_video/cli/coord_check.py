"""`mvideo coord_check [recipe=NAME] key=value ...`: the muP coordinate check as a PNG.

Uses the optim section's muP rules, base width and sphere exclusions, and the coord_check section
(optional; defaults from CoordCheckConfig) for widths, steps and LR.
"""
from __future__ import annotations

import logging
import pathlib

DEFAULT_RECIPE = "default"
log = logging.getLogger("mvideo")


def run(cfg) -> int:
    from megatron_video.optim.coord_check import (
        CoordCheckConfig,
        coord_check,
        plot_coord_check,
    )

    check = getattr(cfg, "coord_check", None) or CoordCheckConfig()
    result = coord_check(cfg.optim, check)
    path = plot_coord_check(result, pathlib.Path(cfg.run.output_dir) / "coord_check.png")
    for parameterisation in ("mup", "sp"):
        for metric in ("activation", "update"):
            slopes = ", ".join(f"{layer} {s:+.2f}" for layer, s in
                               zip(result.layers, result.slopes(parameterisation, metric)))
            log.info("coord_check %s %s slope of log scale vs log width: %s", parameterisation, metric, slopes)
    log.info("coord_check plot: %s", path)
    return 0
