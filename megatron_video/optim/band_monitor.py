"""muP band monitor: per-layer gradient, weight and update scales against the band muP predicts.

muP keeps per-coordinate scales Theta(1) in width, and with the residual branches scaled by depth
(the block's constant offset c = 1/L) they are also uniform over depth: the same parameter of every
block sees gradients and Adam-normalised updates of one size. The monitor therefore checks, at
each validation:
- weight: the RMS row norm of each matrix against 1 (unit rows on the sphere; muP's
  1/sqrt(fan_in) initialisation for the others);
- gradient RMS and per-step update RMS of a repeated parameter (blocks.3.mlp.weight) against the
  median over the same parameter of the other blocks (blocks.*.mlp.weight), given three or more.
One-off parameters (embeddings, final projection) see different data and get the weight check only.
A value more than `band_tolerance` times away from its band centre warns. Modulation parameters are
exempt (`band_exempt`): they start at zero and grow from there by design. The update is the change
since the previous record divided by the steps between, so the first record has none.
"""
from __future__ import annotations

import math
import pathlib
import re
import statistics
from collections import defaultdict
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from megatron_video.optim.builder import model_name
from megatron_video.optim.config import OptimConfig

MIN_PEERS = 3  # fewer peers than this give no meaningful median


def depth_peer_key(name: str) -> str:
    """The name with its layer index (the first numeric part) wildcarded:
    blocks.3.modulation.2.weight -> blocks.*.modulation.2.weight."""
    return re.sub(r"\.\d+(?=\.)", ".*", name, count=1)


@dataclass
class BandReading:
    step: int
    name: str
    quantity: str  # grad | weight | update
    value: float
    low: float
    high: float

    @property
    def in_band(self) -> bool:
        return self.low <= self.value <= self.high


def _tensor_parallel_group(param: torch.Tensor):
    from megatron.core import parallel_state

    if not getattr(param, "tensor_model_parallel", False) or not dist.is_initialized() \
            or not parallel_state.model_parallel_is_initialized():
        return None
    return parallel_state.get_tensor_model_parallel_group()


def _sums(param: torch.Tensor, tensor: torch.Tensor) -> tuple[float, float, float]:
    """(sum of squares, element count, row count) over the whole parameter (all TP ranks)."""
    rows = tensor.shape[0] if tensor.dim() >= 2 else 1
    # On the parameter's device: the TP group is NCCL on GPUs.
    sums = torch.tensor([tensor.float().pow(2).sum().item(), tensor.numel(), rows], dtype=torch.float64,
                        device=param.device)
    group = _tensor_parallel_group(param)
    if group is not None:
        rows_split = getattr(param, "partition_dim", 0) == 0
        dist.all_reduce(sums, group=group)
        if not rows_split:  # rows span the TP ranks: each rank counted all of them
            sums[2] /= dist.get_world_size(group)
    return float(sums[0]), float(sums[1]), float(sums[2])


class BandMonitor:
    def __init__(self, model: nn.Module, cfg: OptimConfig, writer=None):
        """`model` is the bare model (unwrapped); `writer` an optional TensorBoard SummaryWriter."""
        self.cfg = cfg
        self.writer = writer
        self.params = {model_name(n): p for n, p in model.named_parameters() if p.requires_grad}
        self.previous: tuple[int, dict[str, torch.Tensor]] | None = None
        self.history: list[BandReading] = []

    def due(self, step: int) -> bool:
        """Whether `step` is a scheduled check (every optim.band_check_every steps)."""
        return step % self.cfg.band_check_every == 0

    def _exempt(self, name: str) -> bool:
        return any(pattern in name for pattern in self.cfg.band_exempt)

    def _measure(self, step: int) -> dict[str, dict[str, float]]:
        measured: dict[str, dict[str, float]] = defaultdict(dict)
        for name, param in self.params.items():
            grad = getattr(param, "main_grad", None)
            grad = param.grad if grad is None else grad
            if grad is not None:
                sq, n, _ = _sums(param, grad)
                measured[name]["grad"] = math.sqrt(sq / n)
            if param.dim() >= 2:
                sq, _, rows = _sums(param, param.detach())
                measured[name]["weight"] = math.sqrt(sq / rows)
            if self.previous is not None and step > self.previous[0]:
                sq, n, _ = _sums(param, param.detach().float().cpu() - self.previous[1][name])
                measured[name]["update"] = math.sqrt(sq / n) / (step - self.previous[0])
        self.previous = (step, {n: p.detach().float().cpu().clone() for n, p in self.params.items()})
        return measured

    def record(self, step: int) -> list[str]:
        """Measure every parameter, log it, and return one warning per out-of-band reading."""
        measured = self._measure(step)
        peers: dict[tuple, list[float]] = defaultdict(list)
        for name, values in measured.items():
            for quantity, value in values.items():
                peers[(depth_peer_key(name), quantity)].append(value)
        tol = self.cfg.band_tolerance
        warnings = []
        for name, values in measured.items():
            for quantity, value in values.items():
                siblings = peers[(depth_peer_key(name), quantity)]
                if quantity == "weight":
                    centre = 1.0
                elif len(siblings) >= MIN_PEERS:
                    centre = statistics.median(siblings)
                else:
                    centre = None
                if centre is None or centre <= 0:
                    continue
                reading = BandReading(step, name, quantity, value, centre / tol, centre * tol)
                self.history.append(reading)
                if self.writer is not None:
                    self.writer.add_scalar(f"mup_band/{quantity}/{name}", value, step)
                if not reading.in_band and not self._exempt(name):
                    warnings.append(f"step {step}: {name} {quantity} {value:.3g} outside the muP band "
                                    f"[{reading.low:.3g}, {reading.high:.3g}]")
        return warnings

    def plot(self, path: str | pathlib.Path) -> pathlib.Path | None:
        """PNG of the latest record: each parameter's three scales with their bands."""
        if not self.history:
            return None
        from megatron_video.plots import plt, save_figure

        last = max(r.step for r in self.history)
        latest = [r for r in self.history if r.step == last]
        names = sorted({r.name for r in latest})
        index = {n: i for i, n in enumerate(names)}
        fig, axes = plt.subplots(3, 1, figsize=(max(6, 0.25 * len(names)), 9), sharex=True)
        for ax, quantity in zip(axes, ("grad", "weight", "update")):
            rows = [r for r in latest if r.quantity == quantity]
            xs = [index[r.name] for r in rows]
            ax.vlines(xs, [r.low for r in rows], [r.high for r in rows], colors="0.8", linewidth=6)
            ax.scatter(xs, [r.value for r in rows], c=["tab:blue" if r.in_band else "tab:red" for r in rows],
                       s=12, zorder=3)
            ax.set_yscale("log")
            ax.set_ylabel(quantity)
        axes[-1].set_xticks(range(len(names)), names, rotation=90, fontsize=6)
        axes[0].set_title(f"muP band at step {last} (grey: band, red: outside)")
        return save_figure(fig, path)
