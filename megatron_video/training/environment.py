"""Process-level set-up shared by every subcommand: device, precision, seeds, logging."""
from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import random
import sys
from collections.abc import Iterator

import numpy as np
import torch

from megatron_video.config.errors import ConfigError
from megatron_video.cpu_cores import available_cores


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("run.device", "cuda was asked for but no CUDA GPU is visible")
    return torch.device(device)


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"bf16": torch.bfloat16, "fp32": torch.float32}[precision]


def cpu_training_threads(configured: int, loader_workers: int) -> int:
    """Torch intra-op threads for a process training (or sampling) on the CPU: `configured` where it
    is set (> 0); otherwise this process's share of the cores (its affinity split among the node's
    processes, LOCAL_WORLD_SIZE), less one core per loader worker process, at least one, and never
    more than the process runs already (OMP_NUM_THREADS, a launcher's or a test's cap).

    Why: OpenMP threads spin-wait between parallel regions. When the machine's cores are also
    running the loader workers (or anything else), one intra-op thread is descheduled while the
    other spins at the region's barrier, and a step costs several times its CPU time
    (benchmarks/notes.md, "demo step cost")."""
    if configured > 0:
        return configured
    share = available_cores() // max(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), 1)
    return max(1, min(share - loader_workers, torch.get_num_threads()))


@contextlib.contextmanager
def intra_op_threads(count: int) -> Iterator[None]:
    """Torch's intra-op thread count set to `count` while the block runs, then restored (the demo
    samples in the same process after training)."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def setup_logging(level: str, log_file: pathlib.Path | None = None) -> None:
    """One format for every line: greppable by time, level and module."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    logging.basicConfig(level=level, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # megatron-core logs every parameter and its whole optimizer config at INFO: keep that for DEBUG.
    logging.getLogger("megatron.core").setLevel(level if level == "DEBUG" else "WARNING")
