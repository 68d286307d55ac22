"""Stop training cleanly when the scheduler warns: SLURM sends SIGUSR1 ahead of a time limit
(`#SBATCH --signal=B:USR1@...`, forwarded to every task by slurm/train.sbatch) and SIGTERM on a
preemption or `scancel`. The trainer finishes its step, checkpoints and returns; `mvideo train` then
exits with REQUEUE_EXIT_CODE, the job script requeues the job, and the next start resumes from that
checkpoint (train.resume).

Ranks receive the signal at different moments, possibly in different steps, while the checkpoint
is a collective: every step all ranks agree (one max all-reduce of a flag) whether any of them got it.
"""
from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Self

import torch
import torch.distributed as dist

STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)
# EX_TEMPFAIL (sysexits.h): stopped on request with a checkpoint written, to be started again.
REQUEUE_EXIT_CODE = 75


class StopRequest:
    """Records a stop signal while installed (a context manager; the old handlers come back after)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.received = signum

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():  # Python delivers signals there only
            self._previous = {sig: signal.signal(sig, self._handle) for sig in STOP_SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else "none"

    def agreed(self, out_of_time: bool = False) -> tuple[bool, bool]:
        """(stop signal, out of time), each True on every rank as soon as it is on any rank: ranks
        read their own clocks, and one that stopped for the time limit alone would wait in the
        checkpoint's collectives while the others ran the next step."""
        flags = torch.tensor([0 if self.received is None else 1, int(out_of_time)], device=self.device)
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        signalled, late = flags.tolist()
        return bool(signalled), bool(late)
