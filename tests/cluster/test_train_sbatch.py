"""slurm/train.sbatch against a fake allocation: fake `srun` (tasks run here, with SLURM's task ids)
and `scontrol`. Dry runs render the srun lines for given node and GPU counts; a real run trains the
demo model on two CPU ranks, is stopped by USR1 as SLURM would before a time limit, requeues itself,
and the requeued job resumes from the checkpoint to the end."""
from __future__ import annotations

import os
import pathlib
import re
import shlex
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from megatron_video.training.preemption import StopRequest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SBATCH = ROOT / "slurm" / "train.sbatch"

# Runs every task of a step here: --ntasks, or --nodes x --ntasks-per-node, each with its own ids;
# signals reach every task, as srun forwards them.
FAKE_SRUN = """#!/usr/bin/env bash
nodes=1 per_node=1 ntasks=
while [[ $1 == -* ]]; do
  case $1 in
    --nodes=*) nodes=${1#*=} ;;
    --ntasks-per-node=*) per_node=${1#*=} ;;
    --ntasks=*) ntasks=${1#*=} ;;
  esac
  shift
done
ntasks=${ntasks:-$((nodes * per_node))}
echo "fake-srun ntasks=$ntasks: $*" >> "$FAKE_LOG"
pids=()
for ((task = 0; task < ntasks; task++)); do
  SLURM_PROCID=$task SLURM_LOCALID=$task SLURM_NTASKS=$ntasks "$@" &
  pids+=($!)
done
trap 'kill -USR1 "${pids[@]}" 2>/dev/null' USR1
trap 'kill -TERM "${pids[@]}" 2>/dev/null' TERM
status=0
for pid in "${pids[@]}"; do
  while true; do
    wait "$pid" && code=0 || code=$?
    kill -0 "$pid" 2>/dev/null || break
  done
  ((code)) && status=$code
done
exit $status
"""
FAKE_SCONTROL = """#!/usr/bin/env bash
if [[ $1 == show ]]; then printf '%s\\n' $FAKE_NODES; else echo "scontrol $*" >> "$FAKE_LOG"; fi
"""


@pytest.fixture
def fake_slurm(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    log = tmp_path / "slurm.log"

    def environment(nodes: list[str], gpus_per_node: int, **extra: str) -> dict[str, str]:
        env = {**os.environ, "PATH": os.pathsep.join([str(bin_dir), str(pathlib.Path(sys.executable).parent),
                                                       os.environ["PATH"]]),
               "SLURM_JOB_NODELIST": "fake[1-9]", "SLURM_JOB_ID": "4242", "SLURM_GPUS_ON_NODE": str(gpus_per_node),
               "FAKE_NODES": " ".join(nodes), "FAKE_LOG": str(log), **extra}
        # This process's own settings (a test before may have started torch.distributed) stay out.
        for key in ("NCCL_DEBUG", "SLURM_RESTART_COUNT", "DRY_RUN", "CONTAINER", "NODES", "MASTER_ADDR",
                    "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK"):
            if key not in extra:
                env.pop(key, None)
        return env

    environment.log = log
    return environment


def dry_run(env: dict[str, str], *overrides: str, cwd: pathlib.Path) -> list[str]:
    result = subprocess.run(["bash", str(SBATCH), *overrides], env={**env, "DRY_RUN": "1"}, cwd=cwd,
                            capture_output=True, text=True, check=True, timeout=30)
    return result.stdout.splitlines()


def test_dry_run_renders_srun_lines_for_the_allocation(fake_slurm, tmp_path):
    env = fake_slurm(["gpu-a1", "gpu-a2", "gpu-a3"], 4, IMAGE="registry/mvideo:7", MOUNTS="/data:/data")
    lines = dry_run(env, "recipe=train_7b", "data.shards=/data/curated", cwd=tmp_path)
    assert lines[0] == "train.sbatch: 3 node(s) x 4 GPUs = 12 ranks, master gpu-a1:29500"
    plan, train = (shlex.split(line) for line in lines[-2:])
    container = ["--container-image=registry/mvideo:7", "--container-mounts=/data:/data",
                 f"--container-workdir={tmp_path}"]
    assert plan == ["srun", *container, "--nodes=1", "--ntasks=1", "mvideo", "plan", "recipe=train_7b",
                    "data.shards=/data/curated", "plan.gpus=12"]
    assert train[:7] == ["srun", *container, "--nodes=3", "--ntasks-per-node=4", "--kill-on-bad-exit=1"]
    assert train[-4:] == ["mvideo", "train", "recipe=train_7b", "data.shards=/data/curated"]
    assert "NCCL_NVLS_ENABLE=0" in lines and "TORCH_NCCL_ASYNC_ERROR_HANDLING=1" in lines


def test_dry_run_outside_an_allocation_without_container_keeps_nccl_overrides(fake_slurm, tmp_path):
    env = fake_slurm([], 8, NODES="8", CONTAINER="", NCCL_DEBUG="INFO", PLAN_CHECK="0")
    for key in ("SLURM_JOB_NODELIST", "SLURM_GPUS_ON_NODE", "SLURM_JOB_ID"):
        env.pop(key)
    lines = dry_run(env, "recipe=train_22b", cwd=tmp_path)
    assert lines[0] == "train.sbatch: 8 node(s) x 8 GPUs = 64 ranks, master node1:29500"
    assert "NCCL_DEBUG=INFO" in lines and not any(" plan " in line for line in lines)
    train = shlex.split(lines[-1])
    assert train[:4] == ["srun", "--nodes=8", "--ntasks-per-node=8", "--kill-on-bad-exit=1"]


@pytest.mark.slow
def test_usr1_checkpoints_requeues_and_the_requeued_job_finishes(fake_slurm, shard_root, tmp_path):
    run_dir = tmp_path / "run"
    overrides = ["recipe=demo", f"run.output_dir={run_dir}", f"data.shards={shard_root}", "train.steps=400",
                 "optim.warmup_steps=2", "train.val_every=1000", "train.checkpoint_every=1000",
                 "train.val_batches=1", "train.tensorboard=false", "data.num_workers=0", "data.val_fraction=0.25",
                 "data.frames=4", "data.batch_size=2", "run.progress=false"]
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    env = fake_slurm(["127.0.0.1"], 2, CONTAINER="", MASTER_PORT=str(port.getsockname()[1]))
    port.close()
    job = subprocess.Popen(["bash", str(SBATCH), *overrides], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, start_new_session=True)
    metrics = run_dir / "metrics.jsonl"
    try:
        deadline = time.monotonic() + 300
        while not (metrics.exists() and metrics.read_text().count("\n") >= 3) and time.monotonic() < deadline:
            assert job.poll() is None, job.stdout.read()[-4000:]
            time.sleep(0.5)
        job.send_signal(signal.SIGUSR1)  # what `--signal=B:USR1@300` does to the batch shell
        output, _ = job.communicate(timeout=240)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert job.returncode == 0, output[-4000:]
    assert "stop signal" in output and "scontrol requeue 4242" in fake_slurm.log.read_text()
    # Both ranks stopped at the same step (one complete dist checkpoint), well before the last.
    [checkpoint] = (run_dir / "checkpoints").iterdir()
    stopped_at = int(re.fullmatch(r"ckpt_(\d+)", checkpoint.name).group(1))
    assert 3 <= stopped_at < 400 and (checkpoint / "metadata.json").exists()
    # The requeued job: same command, SLURM counts the restart; it resumes and runs to the end.
    steps_after = [*overrides[:3], f"train.steps={stopped_at + 3}", *overrides[4:]]
    again = subprocess.run(["bash", str(SBATCH), *steps_after],
                           env={**env, "SLURM_RESTART_COUNT": "1", "PLAN_CHECK": "0"}, cwd=tmp_path,
                           capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    assert "resumed from" in again.stderr and f"at step {stopped_at}" in again.stderr
    assert fake_slurm.log.read_text().count("scontrol requeue") == 1


def test_stop_request_sees_usr1_and_restores_the_handler():
    before = signal.getsignal(signal.SIGUSR1)
    with StopRequest(torch.device("cpu")) as stop:
        assert stop.agreed() == (False, False) and stop.agreed(out_of_time=True) == (False, True)
        os.kill(os.getpid(), signal.SIGUSR1)
        assert stop.agreed() == (True, False) and stop.received == signal.SIGUSR1
    assert signal.getsignal(signal.SIGUSR1) is before


def _agreement_on_rank() -> tuple:
    """Rank 1 alone past the time limit; no stop signal anywhere."""
    import torch.distributed as dist

    with StopRequest(torch.device("cpu")) as stop:
        return stop.agreed(out_of_time=dist.get_rank() == 1)


def test_every_rank_stops_for_the_time_limit_when_one_rank_is_past_it():
    from megatron_video.testing.distributed import run_distributed

    assert run_distributed(_agreement_on_rank, 2) == [(False, True), (False, True)]
