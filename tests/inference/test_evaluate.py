"""`mvideo eval`'s validation loss on clips cut from real footage, with a tiny random DiT: fixed
timesteps and noise give the same numbers every run, and they tell different weights apart."""
import json

import torch

from megatron_video.config.loader import load_config
from megatron_video.inference.evaluate import evaluate
from megatron_video.inference.generator import VideoGenerator
from megatron_video.testing.tiny import tiny_components


def test_validation_loss_at_fixed_timesteps_is_repeatable_and_tells_weights_apart(shard_root, tmp_path,
                                                                                    megatron_single):
    cfg = load_config("demo", [f"run.output_dir={tmp_path}", f"data.shards={shard_root}", "data.frames=2",
                               "data.height=8", "data.width=8", "data.num_workers=0", "data.val_fraction=0.5",
                               "data.batch_size=2", "eval.batches=2", "eval.timesteps=[0.1,0.5,0.9]"])
    generator = VideoGenerator(tiny_components(), torch.device("cpu"))
    first = json.loads(evaluate(cfg, generator).read_text())
    assert list(first["loss_by_timestep"]) == ["0.1", "0.5", "0.9"] and first["batches"] == 2
    assert all(0 < loss < 100 for loss in first["loss_by_timestep"].values())
    assert json.loads(evaluate(cfg, generator).read_text()) == first
    other = VideoGenerator(tiny_components(seed=1), torch.device("cpu"))
    assert json.loads(evaluate(cfg, other).read_text())["loss_by_timestep"] != first["loss_by_timestep"]
