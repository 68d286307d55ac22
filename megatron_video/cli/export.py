"""`mvideo export checkpoint.export_to=DIR [checkpoint.export_from=RUN_OR_CKPT]
[checkpoint.export_weights=RUN/ema/ema_best.pt]`: one safetensors file + config.json."""
from __future__ import annotations

from megatron_video.config.schema import RootConfig

DEFAULT_RECIPE = "default"
SHORTHANDS = {"to": "checkpoint.export_to", "from": "checkpoint.export_from",
              "weights": "checkpoint.export_weights"}


def run(cfg: RootConfig) -> int:
    from megatron_video.training.export import export_model

    export_model(cfg)
    return 0
