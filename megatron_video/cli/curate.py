"""`mvideo curate input=DIR output=DIR`: raw videos to shards, catalog and ledger."""
from __future__ import annotations

import logging

from megatron_video.config import ConfigError
from megatron_video.config.schema import RootConfig

DEFAULT_RECIPE = "curate"
SHORTHANDS = {"input": "curate.input", "output": "curate.output"}


def run(cfg: RootConfig) -> int:
    from curator.run import curate

    try:
        summary = curate(cfg.curate, progress=cfg.run.progress)
    except ConfigError as err:  # curate() names its own fields; users type them as curate.*
        raise err.under("curate") from None
    logging.getLogger("mvideo").info("curated %d clips into %s (inputs: %s)", summary.clips_written,
                                     cfg.curate.output, summary.inputs_by_status)
    return 0
