"""`mvideo train` under torchrun on gloo runs each 4-rank layout of the parallelism issue end to end
(CP2xPP2, TP2xCP2 with SP, TP2xPP2, DP2xCP2 with the distributed optimizer): 2 steps, validation
through the schedule and one dist checkpoint."""
import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

TORCHRUN = str(pathlib.Path(sys.executable).parent / "torchrun")
ROOT = pathlib.Path(__file__).resolve().parents[2]


LAYOUTS = {
    "cp2_pp2": ["parallel.context=2", "parallel.pipeline=2", "parallel.microbatches=2"],
    "tp2_cp2_sp": ["parallel.tensor=2", "parallel.context=2", "parallel.sequence_parallel=true"],
    "tp2_pp2": ["parallel.tensor=2", "parallel.pipeline=2", "parallel.microbatches=2"],
    "dp2_cp2_dist_opt": ["parallel.context=2", "parallel.distributed_optimizer=true"],
}


@pytest.mark.slow
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_mvideo_train_runs_each_layout_on_gloo(shard_root, tmp_path, layout):
    run = tmp_path / "run"
    command = [TORCHRUN, "--standalone", "--nproc_per_node=4", "-m", "megatron_video.cli.main", "train",
               "recipe=demo", f"data.shards={shard_root}", f"run.output_dir={run}", "run.device=cpu",
               "train.steps=2", "optim.warmup_steps=1", "train.val_every=2", "train.val_batches=1",
               "train.checkpoint_every=2", "train.tensorboard=false", "run.progress=false", "data.num_workers=0",
               "data.frames=4", "data.batch_size=2", "data.val_fraction=0.25", *LAYOUTS[layout]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600, check=False)
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["steps"] == 2 and math.isfinite(summary["val_loss"])
    assert (run / "checkpoints" / "ckpt_0000002" / "metadata.json").exists()
