"""Kill a curation process the way a crash in native decoding code does (SIGSEGV), so tests can
check that a run survives it and pins it on the input that caused it."""
from __future__ import annotations

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
