"""Errors that stop a curation run instead of being recorded against one input."""
from __future__ import annotations


class RunFault(RuntimeError):
    """A fault of the run's environment, not of the input being processed (e.g. the encoder
    processes could not start): every later input would fail the same way, so the stage contract
    lets it through and the run stops. Its in-flight inputs stay unfinished in the ledger, and a
    rerun after the fix curates them, as after a kill."""
