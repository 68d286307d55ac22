"""Process-level set-up shared by every subcommand: device, precision, seeds, logging."""
from __future__ import annotations

import logging
import pathlib
import random
import sys

import numpy as np
import torch

from megatron_video.config.errors import ConfigError


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
