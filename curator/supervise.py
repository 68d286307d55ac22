"""`curate_supervised(cfg)`: the run in a child process, started again whenever that process dies.

A crash in native decoding code (a segmentation fault or an abort in a decoder library) kills the
process it happens in, with every input in flight. Here that process is a child: the parent starts
a new one, which resumes from the ledger like any rerun. The ledger counts, per input, the runs that
died with it in flight (`Ledger.record_start`); `curate()` runs those inputs alone and records one
as failed once `curate.max_attempts` deaths happened with it in flight, so every restart makes
progress and the run ends. An error the run raises itself (a bad config, a run fault) is not a
crash: it is reported, not retried.
"""
from __future__ import annotations

import logging
import multiprocessing
import pathlib
from collections.abc import Callable
from multiprocessing.connection import Connection

from curator.config import CurateConfig
from curator.layout import part_dir
from curator.ledger import Ledger
from curator.run import CurationSummary, check_paths, curate

log = logging.getLogger(__name__)


def _child(cfg: CurateConfig, progress: bool, prepare: Callable[[], None] | None, send: Connection) -> None:
    if prepare is not None:
        prepare()
    try:
        send.send(("summary", curate(cfg, progress=progress)))
    except BaseException as exc:
        send.send(("error", f"{type(exc).__name__}: {exc}"))
        raise


def _ledger_progress(cfg: CurateConfig) -> tuple[int, int]:
    """(inputs finished, input starts outstanding): one of them grows with every death of a run
    that got as far as starting an input."""
    output = part_dir(cfg.output, cfg.part_index, cfg.part_count) if cfg.part_count > 1 else pathlib.Path(cfg.output)
    path = output / "ledger.sqlite"
    if not path.exists():
        return 0, 0
    ledger = Ledger(str(path))
    try:
        finished = sum(ledger.status_counts().values())
        return finished, sum(ledger.interrupted_starts().values())
    finally:
        ledger.close()


def curate_supervised(cfg: CurateConfig, progress: bool = True,
                      prepare: Callable[[], None] | None = None) -> CurationSummary:
    """`curate(cfg)` in a child process (spawned: the parent never touches CUDA or the decoders),
    restarted after each death until the run ends; `prepare` runs first in each child (logging)."""
    check_paths(cfg)
    context = multiprocessing.get_context("spawn")
    deaths_without_progress = 0
    while True:
        before = _ledger_progress(cfg)
        receive, send = context.Pipe(duplex=False)
        # Not a daemon: its encoder pool starts processes of its own.
        child = context.Process(target=_child, args=(cfg, progress, prepare, send), name="curate-run")
        child.start()
        send.close()
        try:
            try:
                kind, value = receive.recv()
            except EOFError:  # the child died without a word: a crash
                kind, value = "died", None
            child.join()
        finally:
            if child.is_alive():  # Ctrl-C or an error in the parent: the child never outlives it
                child.terminate()
                child.join()
        if kind == "summary":
            return value
        if kind == "error":
            raise RuntimeError(f"curation failed: {value}")
        deaths_without_progress = 0 if _ledger_progress(cfg) != before else deaths_without_progress + 1
        if deaths_without_progress >= 2:
            raise RuntimeError(f"the curating process died twice (exit code {child.exitcode}) before starting "
                               "any input: not a crash in one input's decode; see its log")
        log.error("curate process-died exitcode=%s: starting it again from the ledger", child.exitcode)

