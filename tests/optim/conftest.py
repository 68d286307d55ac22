"""Helpers for tests/optim: synthetic snapshot series in the trainer's format."""
import pytest
import torch


@pytest.fixture
def write_snapshots(tmp_path):
    """write_snapshots({step: {"w": tensor, ...}}, extra={step: {"ema_gamma": g}}) -> paths."""

    def write(models: dict, extra: dict | None = None) -> list:
        paths = []
        for step, model in models.items():
            path = tmp_path / f"step_{step:07d}.pt"
            torch.save({"step": step, "model": model, **(extra or {}).get(step, {})}, path)
            paths.append(path)
        return paths

    return write
