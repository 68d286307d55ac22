"""`mvideo SUBCOMMAND [recipe=NAME] [key=value ...]`: Hydra recipes from recipes/, typed and checked.

Every subcommand loads and validates its whole configuration before doing any work, so a typo in a
key, a bad value or a missing input fails within seconds with a message naming the key.
"""
from __future__ import annotations

import importlib
import logging
import sys
import time

SUBCOMMANDS = {
    "demo": "sample footage -> curation -> shards -> a small DiT -> a sampled video and a report",
    "curate": "raw videos -> clips -> WebDataset shards + Parquet catalog + ledger",
    "train": "train (or resume) a VideoDiT on curated shards",
    "sample": "generate videos from prompts with a checkpoint",
    "serve": "HTTP API for video generation (OpenAI-style routes, job queue, metrics)",
    "eval": "validation loss of a checkpoint at fixed seeds and timesteps",
    "ema": "post-hoc EMA: sweep the exponent over saved snapshots, keep the best",
    "hpo": "HEBO search over layer-wise learning-rate multipliers with short runs",
    "coord_check": "muP coordinate check: activation/update scales across widths",
}

USAGE = "usage: mvideo SUBCOMMAND [recipe=NAME] [key=value ...]\n\nsubcommands:\n" + "\n".join(
    f"  {name:<12} {text}" for name, text in SUBCOMMANDS.items()) + (
    "\n\nexamples:\n  mvideo demo\n  mvideo train recipe=demo train.steps=50 data.shards=outputs/demo/curated"
    "\n  mvideo curate input=/videos output=/shards   (curate.* keys may drop the 'curate.' prefix)")


def split_arguments(command: str, args: list[str]) -> tuple[str, list[str]]:
    """The recipe name and Hydra overrides; `input=`/`output=` are shorthands for curate.*."""
    module = importlib.import_module(f"megatron_video.cli.{command}")
    recipe = module.DEFAULT_RECIPE
    overrides = []
    for arg in args:
        key, _, value = arg.partition("=")
        if key == "recipe":
            recipe = value
        elif command == "curate" and key in ("input", "output"):
            overrides.append(f"curate.{arg}")
        else:
            overrides.append(arg)
    return recipe, overrides


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    command, args = argv[0], argv[1:]
    if command not in SUBCOMMANDS:
        print(f"mvideo: unknown subcommand '{command}'\n\n{USAGE}", file=sys.stderr)
        return 2
    from curator.errors import RunFault
    from megatron_video.config import ConfigError
    from megatron_video.config.loader import load_config
    from megatron_video.training.environment import setup_logging

    started = time.perf_counter()
    try:
        recipe, overrides = split_arguments(command, args)
        cfg = load_config(recipe, overrides)
        setup_logging(cfg.run.log_level)
        logging.getLogger("mvideo").info("%s: recipe=%s config checked in %.1f s", command, recipe,
                                         time.perf_counter() - started)
        return importlib.import_module(f"megatron_video.cli.{command}").run(cfg)
    except ConfigError as err:
        print(f"mvideo {command}: {err}", file=sys.stderr)
        return 2
    except RunFault as err:  # the environment's fault, named with its fix; the run resumes once fixed
        print(f"mvideo {command}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
