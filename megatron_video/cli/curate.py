"""`mvideo curate input=DIR output=DIR`: raw videos to shards, catalog and ledger."""
from __future__ import annotations

import functools
import logging

from megatron_video.config import ConfigError
from megatron_video.config.schema import RootConfig

DEFAULT_RECIPE = "curate"
SHORTHANDS = {"input": "curate.input", "output": "curate.output"}


def run(cfg: RootConfig) -> int:
    from curator.supervise import curate_supervised
    from megatron_video.training.environment import setup_logging

    try:
        # In a child process that is started again if a crash in native decoding code kills it.
        summary = curate_supervised(cfg.curate, progress=cfg.run.progress,
                                    prepare=functools.partial(setup_logging, cfg.run.log_level))
    except ConfigError as err:  # curate() names its own fields; users type them as curate.*
        raise err.under("curate") from None
    logging.getLogger("mvideo").info("curated %d clips into %s (inputs: %s; not curated, by reason: %s)",
                                     summary.clips_written, cfg.curate.output, summary.inputs_by_status,
                                     summary.not_curated_by_reason)
    return 0
