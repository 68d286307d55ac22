"""`mvideo serve sample.checkpoint=RUN_DIR [serve.port=8000] [serve.host=127.0.0.1]`: the HTTP API."""
from __future__ import annotations

from megatron_video.config.schema import RootConfig

DEFAULT_RECIPE = "default"


def run(cfg: RootConfig) -> int:
    from megatron_video.inference.server.launch import serve

    return serve(cfg)
