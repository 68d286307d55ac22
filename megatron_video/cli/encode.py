"""`mvideo encode [recipe=NAME] data.shards=DIR [output=DIR] key=value ...`: latent shards for training."""
from __future__ import annotations

import logging

from megatron_video.config.schema import RootConfig

DEFAULT_RECIPE = "default"
SHORTHANDS = {"output": "encode.output", "shards": "data.shards", "filter": "data.filter", "version": "data.version"}


def run(cfg: RootConfig) -> int:
    from megatron_video.data.latent_encoding import encode_latents

    summary = encode_latents(cfg)
    logging.getLogger("mvideo").info(
        "encode finished output=%s shards=%d already_done=%d clips=%d failed=%d s=%.1f; train on it with "
        "data.source=latents data.latents=%s", summary.output, summary.shards, summary.already_done,
        summary.clips, summary.failed, summary.wall_s, summary.output)
    return 0
