"""slurm/curate.sbatch, run for real: fake `srun` and `scontrol` make this machine an allocation of
one or two nodes, so the script starts a real Ray head (and a second raylet) here, curates two sample
videos through the project's Ray runner, and stops them."""
from __future__ import annotations

import ast
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import pytest

from curator.ledger import Ledger

ROOT = pathlib.Path(__file__).resolve().parents[2]
SBATCH = ROOT / "slurm" / "curate.sbatch"

# Every task runs on this machine; of the placement flags only --ntasks matters (copies to start).
FAKE_SRUN = """#!/usr/bin/env bash
ntasks=1
while [[ $1 == -* ]]; do
  case $1 in --ntasks=*) ntasks=${1#*=} ;; esac
  shift
done
((ntasks == 1)) && exec "$@"
trap 'kill -TERM $(jobs -p) 2>/dev/null' TERM INT
for ((task = 0; task < ntasks; task++)); do "$@" & done
wait  # returns early when the trap fires; then wait for the tasks to finish
wait
"""

# The demo recipe's tiny clips, so two videos curate in seconds on 2 cores: a later preset choice
# replaces the script's curate=cluster, and its forced curate.executor=ray still applies on top.
SMALL = ["curate=demo", "curate.max_in_flight=2", "run.progress=false"]


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class FakeAllocation:
    """Fake `srun` and `scontrol` first on PATH, two sample videos as input, and a Ray temp dir that
    names every process of the cluster the script starts."""

    def __init__(self, root: pathlib.Path, samples: pathlib.Path) -> None:
        self.root, self.inputs, self.output, self.bin = root, root / "in", root / "out", root / "bin"
        self.inputs.mkdir()
        for name in ("Megamind.avi", "cup.mp4"):
            shutil.copy(samples / name, self.inputs / name)
        self.bin.mkdir()
        self._script("srun", FAKE_SRUN)
        # Short, outside tmp_path: Ray's unix sockets live under it, and their paths may not exceed 107 bytes.
        self.temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")
        self.processes: list[subprocess.Popen] = []

    def _script(self, name: str, text: str) -> None:
        (self.bin / name).write_text(text)
        (self.bin / name).chmod(0o755)

    def sbatch(self, nodes: list[str], *overrides: str) -> subprocess.CompletedProcess:
        """slurm/curate.sbatch over the inputs on these nodes, with these `mvideo curate` overrides."""
        self._script("scontrol", "#!/usr/bin/env bash\nprintf '%s\\n' " + " ".join(nodes) + "\n")
        # Ports of their own: another Ray instance on this machine may hold the defaults.
        gcs, dashboard, client = _free_ports(3)
        env = {**os.environ,
               "PATH": os.pathsep.join([str(self.bin), str(pathlib.Path(sys.executable).parent), os.environ["PATH"]]),
               "SLURM_JOB_NODELIST": "fake[1-2]", "SLURM_CPUS_ON_NODE": "1", "CONTAINER": "",
               "RAY_PORT": str(gcs), "RAY_WAIT_S": "60",
               "RAY_START_ARGS": f"--temp-dir={self.temp_dir} --object-store-memory={100 * 2**20}",
               "RAY_HEAD_ARGS": f"--include-dashboard=false --dashboard-port={dashboard} "
                                f"--ray-client-server-port={client}"}
        env.pop("RAY_ADDRESS", None)
        process = subprocess.Popen(["bash", str(SBATCH), f"input={self.inputs}", f"output={self.output}", *SMALL,
                                    *overrides], env=env, cwd=self.root, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.processes.append(process)
        output, _ = process.communicate(timeout=240)
        return subprocess.CompletedProcess(process.args, process.returncode, output)

    def ray_pids(self) -> list[int]:
        """Processes of the Ray cluster kept in temp_dir: each names it (or its session) in its
        command line, and no other Ray instance on this machine does."""
        # pgrep exits 1 when nothing matches: the answer hoped for.
        found = subprocess.run(["pgrep", "-f", self.temp_dir], check=False, capture_output=True, text=True).stdout
        return [int(pid) for pid in found.split()]

    def wait_ray_gone(self, seconds: float) -> list[int]:
        """The Ray processes still alive after waiting up to `seconds` for them to exit."""
        deadline = time.monotonic() + seconds
        while (pids := self.ray_pids()) and time.monotonic() < deadline:
            time.sleep(0.5)
        return pids

    def stop_everything(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=60)
        for pid in self.wait_ray_gone(5):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture
def allocation(tmp_path, samples_dir) -> Iterator[FakeAllocation]:
    """A fake allocation whose processes are all stopped afterwards, whatever the test's outcome."""
    fake = FakeAllocation(tmp_path, samples_dir)
    try:
        yield fake
    finally:
        fake.stop_everything()


# The head's name must resolve (the raylets and the driver connect to it); the second name is only
# ever passed to srun's placement flags, which the fake ignores.
@pytest.mark.slow
def test_curates_across_two_ray_nodes_and_stops_them(allocation):
    result = allocation.sbatch([socket.gethostname(), "node2"])
    assert result.returncode == 0, result.stdout[-4000:]
    assert "curate.sbatch: 2 Ray nodes up" in result.stdout
    [line] = [x for x in result.stdout.splitlines() if "curate ray-nodes actors_per_node=" in x]
    assert len(ast.literal_eval(line.split("actors_per_node=", 1)[1])) == 2
    ledger = Ledger(str(allocation.output / "ledger.sqlite"))
    assert ledger.status_counts() == {"done": 2}
    ledger.close()
    shards = list((allocation.output / "shards").glob("shard-*.tar"))
    assert shards and all(shard.stat().st_size > 0 for shard in shards)
    assert allocation.wait_ray_gone(10) == []


def test_failed_driver_fails_the_job_and_still_stops_ray(allocation):
    result = allocation.sbatch([socket.gethostname()], "curate.no_such_key=1")
    assert result.returncode == 2, result.stdout[-4000:]
    assert "config key 'curate.no_such_key'" in result.stdout
    assert "curate.sbatch: 1 Ray nodes up" in result.stdout
    assert allocation.wait_ray_gone(10) == []
