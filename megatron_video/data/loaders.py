"""Which loader feeds training (`data.loader`) and how its position travels in a checkpoint.

`auto` takes DALI where it is installed and a GPU decodes, the CPU loader elsewhere; `dali` on a
machine without DALI is refused, naming the key. Validation always reads through the CPU loader:
a few batches from a fixed start, the same on every machine, so validation losses stay comparable
whichever loader trained.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch

from megatron_video.config import ConfigError
from megatron_video.config.run import DataConfig
from megatron_video.data.dali_loader import DaliClipLoader, dali_installed
from megatron_video.data.dataset import build_loader


def resolve_loader(choice: str, device: torch.device) -> str:
    """"dali" or "cpu" for `data.loader` = choice on `device`."""
    if choice == "dali" and not dali_installed():
        raise ConfigError("data.loader", "dali needs NVIDIA DALI: pip install nvidia-dali-cuda130 "
                                         "(the gpu extra), or use data.loader=cpu")
    if choice == "auto":
        return "dali" if device.type == "cuda" and dali_installed() else "cpu"
    return choice


def build_train_loader(cfg: DataConfig, device: torch.device, seed: int, skip_batches: int = 0,
                       state: dict | None = None) -> Iterator[dict]:
    """Endless training batches {"video": [B, 3, T, H, W], "caption": [B], "key": [B]}. A resumed run
    passes the batches it consumed and, from a DALI loader, that loader's `loader_state`."""
    if resolve_loader(cfg.loader, device) == "dali":
        return DaliClipLoader(cfg, device, seed, skip_batches, state)
    return iter(build_loader(cfg, "train", seed=seed, repeat=True, skip_batches=skip_batches))


def loader_state(loader: Iterator[dict] | None) -> dict | None:
    """What a checkpoint keeps of the loader (the CPU loader resumes from the step count alone)."""
    return loader.state_dict() if isinstance(loader, DaliClipLoader) else None
