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
    "caption": "detailed, short and three-word captions of curated clips (Qwen2.5-VL) -> feature set",
    "balance": "man/woman and vocabulary balancing of captioned clips -> dataset versions",
    "dedup": "near-duplicates within three-word-caption buckets (GPU k-means) -> dataset version",
    "encode": "VAE latents + text-encoder states of curated shards -> latent shards (data.source=latents)",
    "train": "train (or resume) a VideoDiT on curated shards",
    "plan": "per-GPU memory of a recipe's layout, and layouts that fit a GPU",
    "export": "a checkpoint (or post-hoc EMA weights) as one safetensors file + config.json",
    "sample": "generate videos from prompts with a checkpoint",
    "serve": "HTTP API for video generation (OpenAI-style routes, job queue, metrics)",
    "eval": "validation loss of a checkpoint at fixed seeds and timesteps",
    "ema": "post-hoc EMA: sweep the exponent over the kept checkpoint series, keep the best",
    "hpo": "HEBO search over layer-wise learning-rate multipliers with short runs",
    "coord_check": "muP coordinate check: activation/update scales across widths",
    "catalog": "list, add and describe catalog feature sets; save named dataset versions",
    "view": "a localhost web page of the dataset: clips, captions, scores, filter, histograms, ledger",
    "preview": "a grid-preview video (rows x cols tiles) of sampled curated clips or raw inputs",
}

USAGE = "usage: mvideo SUBCOMMAND [recipe=NAME] [key=value ...]\n\nsubcommands:\n" + "\n".join(
    f"  {name:<12} {text}" for name, text in SUBCOMMANDS.items()) + (
    "\n\nexamples:\n  mvideo demo\n  mvideo train recipe=demo train.steps=50 data.shards=outputs/demo/curated"
    "\n  mvideo catalog add aesthetic scores.parquet root=outputs/demo/curated"
    "\n  mvideo view filter='duration_s >= 3'   (the demo's curated output on http://127.0.0.1:8765/)"
    "\n  mvideo curate input=/videos output=/shards   (curate.* keys may drop the 'curate.' prefix)"
    "\n  mvideo caption root=/shards model=/models/Qwen2.5-VL-7B-Instruct   (then: balance root=..., dedup root=...)")


def split_arguments(command: str, args: list[str]) -> tuple[str, list[str]]:
    """The recipe name and Hydra overrides. A subcommand may name shorthands (`input=` for
    `curate.input=`: its SHORTHANDS) and the keys its bare words set, in order (its POSITIONAL)."""
    module = importlib.import_module(f"megatron_video.cli.{command}")
    recipe = module.DEFAULT_RECIPE
    shorthands = getattr(module, "SHORTHANDS", {})
    positional = list(getattr(module, "POSITIONAL", ()))
    overrides = []
    for arg in args:
        key, _, value = arg.partition("=")
        if key == "recipe":
            recipe = value
        elif "=" not in arg and positional:
            overrides.append(f"{positional.pop(0)}={arg}")
        elif key in shorthands:
            overrides.append(f"{shorthands[key]}={value}")
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
