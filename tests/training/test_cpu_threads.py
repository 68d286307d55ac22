"""Intra-op threads of CPU training: the process's share of the cores less its loader workers, never
above what the process already runs, and set only while the steps run."""
import pytest
import torch

from megatron_video.config.loader import load_config
from megatron_video.parallel.state import destroy_distributed
from megatron_video.training import environment
from megatron_video.training.environment import cpu_training_threads, intra_op_threads
from megatron_video.training.trainer import train


@pytest.fixture
def cores(monkeypatch):
    """Set the cores this process may use (what its CPU affinity would say)."""
    def use(count: int) -> None:
        monkeypatch.setattr(environment, "available_cores", lambda: count)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    return use


def test_each_loader_worker_takes_a_core_from_the_intra_op_threads(cores):
    cores(16)
    with intra_op_threads(16):
        assert cpu_training_threads(0, loader_workers=0) == 16
        assert cpu_training_threads(0, loader_workers=1) == 15
        assert cpu_training_threads(0, loader_workers=4) == 12
    cores(2)  # the demo's machine: one thread beside its one loader worker
    with intra_op_threads(2):
        assert cpu_training_threads(0, loader_workers=1) == 1
        assert cpu_training_threads(0, loader_workers=3) == 1  # at least one


def test_the_cores_are_shared_among_the_nodes_training_processes(cores, monkeypatch):
    cores(16)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    with intra_op_threads(16):
        assert cpu_training_threads(0, loader_workers=1) == 3


def test_the_automatic_count_never_raises_a_cap_already_set(cores):
    cores(16)
    with intra_op_threads(2):  # e.g. OMP_NUM_THREADS=2, or a distributed test's one thread per rank
        assert cpu_training_threads(0, loader_workers=1) == 2
    with intra_op_threads(1):
        assert cpu_training_threads(3, loader_workers=1) == 3  # a configured count is taken as it is


def test_a_cpu_run_trains_on_its_threads_and_gives_the_count_back(shard_root, tmp_path):
    before = torch.get_num_threads()
    threads = 2 if before == 1 else 1  # a count other than the process's own
    cfg = load_config("demo", [
        f"run.output_dir={tmp_path / 'run'}", f"data.shards={shard_root}", "train.steps=3",
        "optim.warmup_steps=1", "train.val_batches=1", "train.tensorboard=false", "data.num_workers=0",
        "data.val_fraction=0.25", "data.frames=4", "data.batch_size=2", "run.progress=false",
        f"train.cpu_threads={threads}"])
    try:
        summary = train(cfg)
    finally:
        destroy_distributed()
    assert summary.cpu_threads == threads and summary.steps == 3
    assert torch.get_num_threads() == before
