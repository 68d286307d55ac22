"""Faults of a long run: a non-finite loss or gradient skips the update, loss spikes are logged.

Every rank checks its own gradient buffers (after the data-parallel reduction, so a NaN on one
replica reaches all) and the loss; one max all-reduce over the world makes every rank skip the
same step. Skipped steps are counted (and checkpointed); more than `max_skipped_steps` stops the
run with an error that names the setting.
"""
from __future__ import annotations

import logging
import math
from collections import deque

import torch
import torch.distributed as dist

from megatron_video.training.long_run_config import FaultConfig

log = logging.getLogger(__name__)


class TrainingFault(RuntimeError):
    """The run cannot go on (too many non-finite steps)."""


def grads_finite(chunks: list[torch.nn.Module], loss: float, device: torch.device) -> bool:
    """Whether the loss and every rank's gradient buffers are finite (a collective, one host sync).

    Each buffer's min and max come from one reduction pass (torch.aminmax propagates NaN, and both
    are finite exactly when every element is) instead of a boolean isfinite map of the whole buffer."""
    # In the buffer's own dtype: a float() copy of a bf16 buffer would cost twice its memory.
    extremes = [value.float() for chunk in chunks for buffer in chunk.buffers if buffer.grad_data.numel()
                for value in torch.aminmax(buffer.grad_data)]
    flag = torch.tensor([float(not math.isfinite(loss))], device=device)
    if extremes:
        flag = torch.maximum(flag, (~torch.isfinite(torch.stack(extremes)).all()).float())
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return not bool(flag.item())


class FaultMonitor:
    def __init__(self, cfg: FaultConfig):
        self.cfg = cfg
        self.skipped = 0
        self.spikes = 0
        self._recent: deque[float] = deque(maxlen=cfg.spike_window)

    def skip(self, step: int, loss: float) -> None:
        """Count a skipped update; raise once the limit is passed."""
        self.skipped += 1
        log.warning("step=%d non-finite loss or gradient (loss=%s): update skipped (%d skipped so far)",
                    step, loss, self.skipped)
        if self.skipped > self.cfg.max_skipped_steps:
            raise TrainingFault(f"{self.skipped} steps had a non-finite loss or gradient, more than "
                                f"faults.max_skipped_steps={self.cfg.max_skipped_steps}: stopping at step {step} "
                                "(resume from the last checkpoint with a lower optim.lr, or raise the limit)")

    def observe(self, step: int, loss: float) -> bool:
        """Record a finite loss; True (and a log line) when it spikes above the recent mean."""
        spike = len(self._recent) == self._recent.maxlen and loss > self.cfg.spike_factor * (
            sum(self._recent) / len(self._recent))
        if spike:
            self.spikes += 1
            log.warning("step=%d loss spike: %.4g is %.1fx the mean of the last %d steps", step, loss,
                        loss / (sum(self._recent) / len(self._recent)), len(self._recent))
        self._recent.append(loss)
        return spike
