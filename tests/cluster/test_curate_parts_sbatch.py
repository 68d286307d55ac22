"""slurm/curate_parts.sbatch, run for real: a fake `srun` starts the allocation's tasks on this
machine, each with its own SLURM_PROCID, so every task curates its part of three sample videos with
the local executor into a part of the output; a bad override fails the job."""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from curator.layout import part_dir
from curator.ledger import Ledger
from megatron_video.data.dataset import list_shards

ROOT = pathlib.Path(__file__).resolve().parents[2]
SBATCH = ROOT / "slurm" / "curate_parts.sbatch"

# SLURM_NTASKS copies of the command, task i with SLURM_PROCID=i; the placement flags are ignored.
FAKE_SRUN = """#!/usr/bin/env bash
while [[ $1 == -* ]]; do shift; done
pids=()
for ((task = 0; task < SLURM_NTASKS; task++)); do SLURM_PROCID=$task "$@" & pids+=($!); done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
"""


def _sbatch(tmp_path: pathlib.Path, samples: pathlib.Path, *overrides: str) -> subprocess.CompletedProcess:
    inputs, bin_dir = tmp_path / "in", tmp_path / "bin"
    inputs.mkdir(exist_ok=True)
    bin_dir.mkdir(exist_ok=True)
    for name in ("Megamind.avi", "cup.mp4", "box.mp4"):
        shutil.copy(samples / name, inputs / name)
    (bin_dir / "srun").write_text(FAKE_SRUN)
    (bin_dir / "srun").chmod(0o755)
    env = {**os.environ, "SLURM_NTASKS": "2", "CONTAINER": "",
           "PATH": os.pathsep.join([str(bin_dir), str(pathlib.Path(sys.executable).parent), os.environ["PATH"]])}
    # The demo preset replaces the script's gpu_node (which asks for a GPU); the task's part stays.
    return subprocess.run(["bash", str(SBATCH), f"input={inputs}", f"output={tmp_path / 'out'}", "curate=demo",
                           "curate.workers=1", "run.progress=false", *overrides],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.slow
def test_each_task_curates_its_part_of_the_inputs(tmp_path, samples_dir):
    result = _sbatch(tmp_path, samples_dir)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    done = []
    for index in range(2):
        ledger = Ledger(str(part_dir(tmp_path / "out", index, 2) / "ledger.sqlite"))
        done.append(ledger.status_counts())
        ledger.close()
    assert done == [{"done": 2}, {"done": 1}]
    shards = list_shards(tmp_path / "out")
    assert {pathlib.Path(s).parents[1].name for s in shards} == {"part-00000-of-00002", "part-00001-of-00002"}


def test_a_bad_override_fails_the_job(tmp_path, samples_dir):
    result = _sbatch(tmp_path, samples_dir, "curate.no_such_key=1")
    assert result.returncode == 2, (result.stdout + result.stderr)[-4000:]
    assert "config key 'curate.no_such_key'" in result.stderr + result.stdout
    assert not (tmp_path / "out").exists()
