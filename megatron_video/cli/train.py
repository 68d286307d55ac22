"""`mvideo train [recipe=NAME] key=value ...`: train or resume a VideoDiT."""
from __future__ import annotations

import logging

from megatron_video.config.schema import RootConfig

DEFAULT_RECIPE = "default"


def run(cfg: RootConfig) -> int:
    from megatron_video.training.preemption import REQUEUE_EXIT_CODE
    from megatron_video.training.trainer import train

    summary = train(cfg)  # checks its inputs (shards, splits, warmup) before building anything
    first, last = summary.loss_drop()
    logging.getLogger("mvideo").info(
        "trained steps %d..%d in %.1f s (%.3f s/step); loss %.4f -> %.4f; val_loss %.4f; checkpoint %s",
        summary.start_step, summary.steps, summary.wall_s, summary.s_per_step, first, last,
        summary.val_loss, summary.checkpoint)
    # Stopped by a signal (preemption, time limit ahead): the checkpoint is written; ask for a requeue.
    return REQUEUE_EXIT_CODE if summary.stop_signal else 0
