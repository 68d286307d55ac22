"""Checkpoints that resume a run exactly, and weight-only snapshots for post-hoc EMA.

A checkpoint holds the model, optimizer and scheduler state, the step, the RNG states and the data
loader's epoch. It is written to a temporary name and renamed, so a run killed mid-write leaves the
previous checkpoint intact. With several ranks, each rank writes its own file (its shard of the
model and optimizer).
"""
from __future__ import annotations

import os
import pathlib
import re
from typing import Any

import torch
import torch.distributed as dist

from megatron_video.config import ConfigError

_CKPT = re.compile(r"ckpt_(\d{7})(?:_rank\d+)?\.pt$")


def _rank_suffix() -> str:
    if dist.is_initialized() and dist.get_world_size() > 1:
        return f"_rank{dist.get_rank()}"
    return ""


def atomic_save(obj: Any, path: pathlib.Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save_checkpoint(ckpt_dir: pathlib.Path, step: int, state: dict[str, Any], keep: int = 2) -> pathlib.Path:
    path = ckpt_dir / f"ckpt_{step:07d}{_rank_suffix()}.pt"
    atomic_save({"step": step, **state}, path)
    for old in sorted(ckpt_dir.glob(f"ckpt_*{_rank_suffix()}.pt"))[:-keep]:
        old.unlink()
    return path


def latest_checkpoint(ckpt_dir: pathlib.Path) -> pathlib.Path | None:
    """The newest checkpoint file of this rank, or None."""
    candidates = [p for p in ckpt_dir.glob(f"ckpt_*{_rank_suffix()}.pt") if _CKPT.search(p.name)]
    return max(candidates, key=lambda p: int(_CKPT.search(p.name).group(1))) if candidates else None


def rng_states(device: torch.device) -> dict[str, torch.Tensor]:
    """The global generators a resumed run must continue: the CPU one and, on GPU, the device's.
    (Diffusion noise comes from per-step generators; megatron's tracker is re-seeded at start-up.)"""
    states = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def restore_rng_states(states: dict[str, torch.Tensor], device: torch.device) -> None:
    # Generator states must be CPU byte tensors, whatever map_location the checkpoint was read with.
    torch.set_rng_state(states["cpu"].cpu())
    if "cuda" in states and device.type == "cuda":
        torch.cuda.set_rng_state(states["cuda"].cpu(), device)


def load_checkpoint(path: pathlib.Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    return torch.load(path, map_location=map_location, weights_only=False)


def resolve_checkpoint(path: str) -> pathlib.Path:
    """A checkpoint file as given, or the latest one of a training output dir."""
    candidate = pathlib.Path(path)
    if candidate.is_file():
        return candidate
    for folder in (candidate / "checkpoints", candidate):
        if folder.is_dir() and (found := latest_checkpoint(folder)):
            return found
    raise ConfigError("sample.checkpoint", f"no checkpoint at '{path}'")


def save_snapshot(snapshot_dir: pathlib.Path, step: int, model_state: dict[str, torch.Tensor]) -> None:
    """Weights only, in the format `mvideo ema` reads: {"step", "model"} in step_XXXXXXX.pt."""
    atomic_save({"step": step, "model": model_state}, snapshot_dir / f"step_{step:07d}.pt")
