"""Coordinate check (Yang et al., Tensor Programs V): do activation and update scales stay flat in
width under our muP rules (sphere rows + mup.py LR multipliers + muP readout init), and do they drift
under the standard parameterisation (default init, one AdamW LR for all)?

A tiny MLP with the model's naming (patch_embed -> blocks.i.mlp -> final_proj) is trained for a few
steps at several widths; for every linear layer we record the RMS of its output (the coordinate
size) and the RMS of the change of that output since step 0 (the size of the update's effect).
Under muP both are Theta(1) in width: the slope of log(scale) against log(width) stays near zero.
"""
from __future__ import annotations

import dataclasses
import math
import pathlib
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from megatron_video.config.errors import require
from megatron_video.optim.builder import init_sphere_
from megatron_video.optim.classify import sphere_parameters
from megatron_video.optim.config import OptimConfig
from megatron_video.optim.mup import lr_multiplier
from megatron_video.optim.sphere_adamw import SphereAdamW

PARAMETERISATIONS = ("mup", "sp")
METRICS = ("activation", "update")


@dataclass
class CoordCheckConfig:
    """The `coord_check` section of `mvideo coord_check`."""

    widths: list = field(default_factory=lambda: [64, 128, 256, 512])
    # A few small steps keep training in the linear regime where the width scaling shows; at large
    # LRs saturation flattens the standard parameterisation's curves too and hides the difference.
    lr: float = 1e-3
    depth: int = 3
    steps: int = 3
    batch_size: int = 8
    input_dim: int = 16
    output_dim: int = 8
    seeds: int = 2

    def __post_init__(self) -> None:
        require(len(self.widths) >= 2 and all(w >= 1 for w in self.widths), "widths",
                "needs two or more positive widths")
        require(self.lr > 0, "lr", "must be > 0")
        for key in ("depth", "steps", "batch_size", "input_dim", "output_dim", "seeds"):
            require(getattr(self, key) >= 1, key, "must be >= 1")


class _Block(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.mlp = nn.Linear(width, width)


class _TinyMLP(nn.Module):
    def __init__(self, input_dim: int, width: int, depth: int, output_dim: int):
        super().__init__()
        self.patch_embed = nn.Linear(input_dim, width)
        self.blocks = nn.ModuleList(_Block(width) for _ in range(depth))
        self.final_proj = nn.Linear(width, output_dim)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = [self.patch_embed(x)]
        for block in self.blocks:
            outputs.append(block.mlp(torch.nn.functional.gelu(outputs[-1])))
        outputs.append(self.final_proj(torch.nn.functional.gelu(outputs[-1])))
        return outputs


def layer_names(check: CoordCheckConfig) -> list[str]:
    return ["patch_embed"] + [f"blocks.{i}.mlp" for i in range(check.depth)] + ["final_proj"]


def _optimizer(model: nn.Module, parameterisation: str, width: int, cfg: OptimConfig) -> torch.optim.Optimizer:
    betas = tuple(cfg.betas)
    if parameterisation == "sp":
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=betas, eps=cfg.eps, weight_decay=0.0)
    init_sphere_(model, cfg)
    with torch.no_grad():  # muP readout: std sqrt(base)/width, which is SP's at the base width
        model.final_proj.weight.normal_(0.0, math.sqrt(cfg.base_width) / width)
    sphere = {id(p) for p in sphere_parameters(model, cfg).values()}
    groups = [{"params": [p], "sphere": id(p) in sphere, "lr": cfg.lr * lr_multiplier(n, p, width, cfg)}
              for n, p in model.named_parameters()]
    return SphereAdamW(groups, lr=cfg.lr, betas=betas, eps=cfg.eps, weight_decay=0.0)


def _rms(t: torch.Tensor) -> float:
    return t.pow(2).mean().sqrt().item()


def _run(parameterisation: str, width: int, seed: int, cfg: OptimConfig,
         check: CoordCheckConfig) -> tuple[list[float], list[float]]:
    torch.manual_seed(seed)
    model = _TinyMLP(check.input_dim, width, check.depth, check.output_dim)
    optimizer = _optimizer(model, parameterisation, width, cfg)
    data = torch.Generator().manual_seed(10_000 + seed)  # the same data at every width
    x = torch.randn(check.batch_size, check.input_dim, generator=data)
    y = torch.randn(check.batch_size, check.output_dim, generator=data)
    with torch.no_grad():
        before = model(x)
    for _ in range(check.steps):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x)[-1], y).backward()
        optimizer.step()
    with torch.no_grad():
        after = model(x)
    return [_rms(a) for a in after], [_rms(a - b) for a, b in zip(after, before)]


@dataclass
class CoordCheckResult:
    widths: list[int]
    layers: list[str]
    scales: dict[tuple[str, str], np.ndarray]  # (parameterisation, metric) -> [layer, width]

    def slopes(self, parameterisation: str, metric: str) -> np.ndarray:
        """Per layer: the least-squares slope of log(scale) against log(width)."""
        log_w = np.log(self.widths)
        return np.array([np.polyfit(log_w, np.log(row), 1)[0] for row in self.scales[(parameterisation, metric)]])


def coord_check(cfg: OptimConfig, check: CoordCheckConfig) -> CoordCheckResult:
    """Scales at every width for muP and for the standard parameterisation, averaged over seeds;
    `cfg` supplies the muP rules, base width, sphere exclusions and Adam constants, `check.lr` the
    base LR."""
    cfg = dataclasses.replace(cfg, lr=check.lr)
    scales = {}
    for parameterisation in PARAMETERISATIONS:
        runs = np.array([[_run(parameterisation, w, seed, cfg, check) for seed in range(check.seeds)]
                         for w in check.widths])  # [width, seed, metric, layer]
        mean = runs.mean(axis=1)
        for m, metric in enumerate(METRICS):
            scales[(parameterisation, metric)] = mean[:, m, :].T
    return CoordCheckResult(list(check.widths), layer_names(check), scales)


def plot_coord_check(result: CoordCheckResult, path: str | pathlib.Path) -> pathlib.Path:
    """2x2 PNG: rows muP / standard, columns activation / update scale, one line per layer."""
    from megatron_video.plots import plt, save_figure

    fig, axes = plt.subplots(2, 2, figsize=(9, 7), sharex=True)
    for r, parameterisation in enumerate(PARAMETERISATIONS):
        for c, metric in enumerate(METRICS):
            ax = axes[r, c]
            for layer, row, slope in zip(result.layers, result.scales[(parameterisation, metric)],
                                         result.slopes(parameterisation, metric)):
                ax.plot(result.widths, row, "o-", label=f"{layer} (slope {slope:+.2f})")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{'muP' if parameterisation == 'mup' else 'standard'}: {metric} RMS")
            ax.legend(fontsize=6)
    for ax in axes[-1]:
        ax.set_xlabel("width")
    return save_figure(fig, path)
