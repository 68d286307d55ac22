"""`mvideo dedup root=DIR`: near-duplicates within three-word-caption buckets -> feature set `dedup`
(dedup_keep) and reports/dedup.json (removed fraction per bucket)."""
from __future__ import annotations

from megatron_video.config import ConfigError

DEFAULT_RECIPE = "default"


def run(cfg) -> int:
    from curator.dedup.run import run_dedup
    from megatron_video.training.environment import resolve_device

    try:
        run_dedup(cfg.dedup, resolve_device(cfg.dedup.device))
    except ConfigError as err:
        raise err.under("dedup") from None
    return 0
