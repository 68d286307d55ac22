"""`mvideo caption root=DIR model=QWEN_DIR`: detailed, short and three-word captions of a curated
output's clips -> feature set `captions`."""
from __future__ import annotations

from megatron_video.cli.post_curation import run_pass

DEFAULT_RECIPE = "default"
SHORTHANDS = {"root": "caption.root", "model": "caption.model"}


def run(cfg) -> int:
    from curator.captions.run import run_captions
    from megatron_video.training.environment import resolve_device

    return run_pass("caption", lambda: run_captions(cfg.caption, resolve_device(cfg.caption.device)))
