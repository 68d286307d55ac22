"""`mvideo eval sample.checkpoint=RUN_DIR [eval.timesteps=[0.1,0.5,0.9]] [eval.batches=8]`: validation
loss at fixed timesteps and noise seeds, as JSON."""
from __future__ import annotations

from megatron_video.config.schema import RootConfig

DEFAULT_RECIPE = "default"


def run(cfg: RootConfig) -> int:
    from megatron_video.inference.evaluate import evaluate

    print(evaluate(cfg).read_text())
    return 0
