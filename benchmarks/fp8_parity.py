"""The loss-parity half of benchmarks/fp8_vs_bf16.py: the demo recipe trained on the demo footage
for --parity-steps steps in bf16 and in FP8 under each of --parity-seeds seeds (each pair on the same
initialisation, data order and noise), and the verdict on their final losses (mean of the last 10%
of steps).

FP8 is at parity when the relative gap between the mean final loss of its runs and bf16's is within
twice the standard error of that difference as bf16's own seed-to-seed scatter gives it
(2 * sd(bf16) * sqrt(2 / seeds), relative to bf16's mean), floored at 0.5%. Why: runs that differ
only in their seed end several percent apart at 300 demo steps (7% measured on an H200), so one pair
of runs cannot tell a rounding bias of a few percent from the seed's own effect; averaging over
seeds shrinks that scatter by sqrt(seeds), and FP8 rounding (relative 2^-4 per e4m3 operand,
unbiased) only moves the mean beyond it if it biases the optimisation. The floor keeps a few seeds
that happen to land close together from demanding more than the measurement can give.
"""
from __future__ import annotations

import argparse
import math
import pathlib
import statistics

import torch

from megatron_video.parallel.state import destroy_distributed

PARITY_FLOOR = 0.005


def parity_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shards", type=pathlib.Path, default=None,
                        help="curated demo output (its shards/ and catalog/); curated from data/samples if absent")
    parser.add_argument("--parity-steps", type=int, default=300,
                        help="steps of each loss-parity run; 0 times the throughput only (no curation, no training)")
    parser.add_argument("--latents", type=pathlib.Path, default=None,
                        help="latent shards of the demo footage (`mvideo encode recipe=demo`): the parity runs "
                             "train on them (data.source=latents) instead of curated shards")
    parser.add_argument("--parity-seeds", type=int, default=3,
                        help="seeds of the loss-parity runs, one bf16 and one FP8 run each (at least 2)")


def demo_shards(shards: pathlib.Path | None, work: pathlib.Path) -> pathlib.Path:
    if shards is not None:
        return shards
    from curator.run import curate
    from megatron_video.config.loader import load_config

    # No filters: their scores select nothing here (the demo trains on every clip), and the face
    # filter needs OpenCV 4's cascades, which a GPU machine's OpenCV 5 lacks.
    cfg = load_config("demo", [f"run.output_dir={work}", "run.progress=false", "curate.filters.run=[]"])
    curate(cfg.curate, progress=False)
    return pathlib.Path(cfg.curate.output)


def parity_data(shards: pathlib.Path | None, latents: pathlib.Path | None, quick: bool,
                work: pathlib.Path) -> list[str]:
    """The parity runs' data overrides: latent shards (no encoders loaded; the clip shape is the one
    they were encoded at) or curated shards (4-frame clips with --quick), curated into `work` from
    the demo footage when `shards` is None."""
    if latents is not None:
        return ["data.source=latents", f"data.latents={latents}"]
    return [f"data.shards={demo_shards(shards, work)}"] + (["data.frames=4"] if quick else [])


def final_loss(data: list[str], run_dir: pathlib.Path, steps: int, device: torch.device, fp8: str,
               seed: int, quick: bool) -> float:
    from megatron_video.config.loader import load_config
    from megatron_video.training.trainer import train

    overrides = [f"run.output_dir={run_dir}", *data, f"train.steps={steps}", f"run.seed={seed}",
                 f"run.device={device.type}", f"train.fp8={fp8}", "train.time_limit_s=0", "run.progress=false",
                 "train.tensorboard=false", f"train.val_every={steps}", f"train.checkpoint_every={steps}"]
    if quick:
        overrides += ["optim.warmup_steps=1", "data.num_workers=0", "data.batch_size=2",
                      "data.val_fraction=0.25", "train.val_batches=1"]
    destroy_distributed()
    summary = train(load_config("demo", overrides))
    destroy_distributed()
    return summary.loss_drop()[1]


def loss_parity(data: list[str], work: pathlib.Path, steps: int, device: torch.device, quick: bool,
                seeds: int) -> dict:
    """bf16 and FP8 runs under `seeds` seeds and the verdict of the rule in this module's docstring."""
    if seeds < 2:
        raise ValueError("--parity-seeds must be at least 2: the tolerance is the seeds' own scatter")
    losses = {precision: [final_loss(data, work / f"{precision}_seed{seed}", steps, device, fp8, seed, quick)
                          for seed in range(seeds)]
              for precision, fp8 in (("bf16", "off"), ("fp8", "native"))}
    bf16_mean, fp8_mean = statistics.fmean(losses["bf16"]), statistics.fmean(losses["fp8"])
    gap = abs(fp8_mean - bf16_mean) / bf16_mean
    seed_scatter = statistics.stdev(losses["bf16"]) / bf16_mean
    tolerance = max(2 * seed_scatter * math.sqrt(2 / seeds), PARITY_FLOOR)
    return {"steps": steps, "seeds": seeds,
            "final_loss": {precision: [round(v, 5) for v in values] for precision, values in losses.items()},
            "mean_final_loss": {"bf16": round(bf16_mean, 5), "fp8": round(fp8_mean, 5)},
            "fp8_gap": round(gap, 4), "bf16_seed_scatter": round(seed_scatter, 4), "tolerance": round(tolerance, 4),
            "at_parity": gap <= tolerance}
