"""slurm/serve.sbatch with a fake `srun` (its tasks run here) and a stand-in `mvideo` that records
what each task was started with: one rank per task with the rendezvous variables set, CFG parallel
on by default for two ranks and the user's overrides after it, and scancel's SIGTERM reaching every
task and ending the job."""
from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]

FAKE_SRUN = """#!/usr/bin/env bash
while [[ $1 == -* ]]; do shift; done
trap 'kill -TERM $(jobs -p) 2>/dev/null' TERM INT
for ((task = 0; task < SLURM_NTASKS; task++)); do SLURM_PROCID=$task SLURM_LOCALID=$task "$@" & done
wait
wait
"""

# Records its rank, rendezvous and arguments, then serves until SIGTERM, as `mvideo serve` does.
FAKE_MVIDEO = """#!/usr/bin/env bash
out=$OUT/rank$RANK
echo "$RANK $WORLD_SIZE $LOCAL_RANK $MASTER_ADDR:$MASTER_PORT $*" > "$out"
sleep 60 > /dev/null &
trap 'kill $!; echo stopped >> "$out"; exit 0' TERM
wait
"""


def _bin(root: pathlib.Path) -> pathlib.Path:
    folder = root / "bin"
    folder.mkdir()
    for name, text in (("srun", FAKE_SRUN), ("mvideo", FAKE_MVIDEO)):
        (folder / name).write_text(text)
        (folder / name).chmod(0o755)
    return folder


def test_serve_sbatch_starts_one_rank_per_task_and_stops_on_sigterm(tmp_path):
    env = {**os.environ, "PATH": f"{_bin(tmp_path)}{os.pathsep}{os.environ['PATH']}", "OUT": str(tmp_path),
           "SLURM_NTASKS": "2", "CONTAINER": "", "MASTER_PORT": "29999"}
    job = subprocess.Popen(["bash", str(ROOT / "slurm" / "serve.sbatch"), "model=1b", "serve.port=9000"],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ranks = [tmp_path / "rank0", tmp_path / "rank1"]
    deadline = time.monotonic() + 30
    while not all(path.exists() and path.read_text() for path in ranks):
        assert time.monotonic() < deadline and job.poll() is None, job.stdout.read() if job.poll() else "timeout"
        time.sleep(0.1)
    host = subprocess.run(["hostname"], capture_output=True, text=True, check=True).stdout.strip()
    for rank, path in enumerate(ranks):
        assert path.read_text().split() == [str(rank), "2", str(rank), f"{host}:29999", "serve",
                                            "sample.cfg_parallel=true", "model=1b", "serve.port=9000"]
    job.send_signal(signal.SIGTERM)
    assert job.wait(timeout=30) == 143
    assert all(path.read_text().splitlines()[-1] == "stopped" for path in ranks)
    assert "serve.sbatch: 2 sampling rank(s)" in job.stdout.read()
