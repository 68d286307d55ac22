"""What `mvideo caption`, `balance` and `dedup` share: each runs one pass over a curated output and
reports a bad value under its own section (`dedup.threshold`), as users type it."""
from __future__ import annotations

from collections.abc import Callable

from megatron_video.config import ConfigError


def run_pass(section: str, work: Callable[[], object]) -> int:
    try:
        work()
    except ConfigError as err:
        raise err.under(section) from None
    return 0
