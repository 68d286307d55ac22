"""Kill a process the way real failures do, so tests can check what survives: a curation process
by SIGSEGV (a crash in native decoding code), a trainer by SIGKILL in the middle of an asynchronous
checkpoint save (an OOM kill, a node lost)."""
from __future__ import annotations

import functools
import os
import signal


def segfault_on(fragment: str) -> None:
    """From now on, this process dies by SIGSEGV when its decode stage reaches an input whose path
    contains `fragment` (run first in each of `curate_supervised`'s child processes)."""
    from curator.stages.decode import DecodeStage

    original = DecodeStage.process

    def process(self, task):
        if fragment in task.source:
            os.kill(os.getpid(), signal.SIGSEGV)
        return original(self, task)

    DecodeStage.process = process


def kill_during_async_save(step: int) -> None:
    """From now on, this rank's trainer is killed by SIGKILL from its background checkpoint writer,
    right after that writer has written this rank's shards of the checkpoint of `step` and before
    the save is published (the trainer is training on meanwhile)."""
    from megatron_video.training.checkpoint import Checkpointer

    original = Checkpointer.schedule

    def schedule(self, request, save_step: int) -> None:
        if save_step == step:
            request = request._replace(async_fn=functools.partial(_write_then_kill_parent, request.async_fn))
        original(self, request, save_step)

    Checkpointer.schedule = schedule


def _write_then_kill_parent(write, *args, **kwargs) -> None:
    write(*args, **kwargs)
    os.kill(os.getppid(), signal.SIGKILL)
