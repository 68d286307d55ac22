"""The loss-parity half of benchmarks/fp8_vs_bf16.py: the demo recipe trained three times on the
same data order and noise (bf16, FP8, bf16 under another seed) and the verdict on their final
losses. Why the rule is what it is: fp8_vs_bf16.py's docstring (its --help)."""
from __future__ import annotations

import argparse
import pathlib

import torch

from megatron_video.parallel.state import destroy_distributed

PARITY_FLOOR, PARITY_CAP = 0.005, 0.02


def parity_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shards", type=pathlib.Path, default=None,
                        help="curated demo output (its shards/ and catalog/); curated from data/samples if absent")
    parser.add_argument("--parity-steps", type=int, default=300,
                        help="steps of each loss-parity run; 0 times the throughput only (no curation, no training)")
    parser.add_argument("--latents", type=pathlib.Path, default=None,
                        help="latent shards of the demo footage (`mvideo encode recipe=demo`): the parity runs "
                             "train on them (data.source=latents) instead of curated shards")


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


def loss_parity(data: list[str], work: pathlib.Path, steps: int, device: torch.device, quick: bool) -> dict:
    """FP8 is at parity when its final loss is within bf16's seed-to-seed gap of bf16's, the gap
    taken as no less than PARITY_FLOOR and no more than PARITY_CAP."""
    losses = {name: final_loss(data, work / name, steps, device, fp8, seed, quick)
              for name, fp8, seed in [("bf16", "off", 0), ("fp8", "native", 0), ("bf16_seed1", "off", 1)]}
    fp8_gap = abs(losses["fp8"] - losses["bf16"]) / losses["bf16"]
    seed_gap = abs(losses["bf16_seed1"] - losses["bf16"]) / losses["bf16"]
    tolerance = min(max(seed_gap, PARITY_FLOOR), PARITY_CAP)
    return {"steps": steps, "final_loss": {k: round(v, 5) for k, v in losses.items()},
            "fp8_gap": round(fp8_gap, 4), "seed_gap": round(seed_gap, 4), "tolerance": round(tolerance, 4),
            "at_parity": fp8_gap <= tolerance}
