"""`mvideo dedup root=DIR`: near-duplicates within three-word-caption buckets -> feature set `dedup`
(dedup_keep) and reports/dedup.json (removed fraction per bucket)."""
from __future__ import annotations

from megatron_video.cli.post_curation import run_pass

DEFAULT_RECIPE = "default"
SHORTHANDS = {"root": "dedup.root"}


def run(cfg) -> int:
    from curator.dedup.run import run_dedup
    from megatron_video.training.environment import resolve_device

    return run_pass("dedup", lambda: run_dedup(cfg.dedup, resolve_device(cfg.dedup.device)))
