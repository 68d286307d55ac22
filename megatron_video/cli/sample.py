"""`mvideo sample sample.checkpoint=RUN_DIR sample.prompts='[...]'`: videos from prompts."""
from __future__ import annotations

from megatron_video.config.schema import RootConfig

DEFAULT_RECIPE = "default"


def run(cfg: RootConfig) -> int:
    from megatron_video.inference.sample import sample_videos

    for path in sample_videos(cfg):
        print(path)
    return 0
