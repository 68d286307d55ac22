"""An opt-in timeline of a curation run: spans (kind, start, end) of the executors' jobs, the NVDEC
decoder's calls and the encodes, so a run's overlap can be seen, not only its stage totals.

Off unless a caller records (`benchmarks/curation_pipeline.py --timeline` does): a span then costs
one flag test. Spans from every thread of the process go into one list (appends are atomic under
the GIL), so record one run at a time.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

Span = tuple[str, float, float]  # kind, start and end in time.perf_counter() seconds
_spans: list[Span] | None = None


@contextlib.contextmanager
def span(kind: str) -> Iterator[None]:
    """Time the block as one span of `kind` while a recording is on."""
    if _spans is None:
        yield
        return
    start = time.perf_counter()
    try:
        yield
    finally:
        _spans.append((kind, start, time.perf_counter()))


@contextlib.contextmanager
def recording() -> Iterator[list[Span]]:
    """Collect the spans of everything run inside the block; yields the list they go into."""
    global _spans
    if _spans is not None:
        raise RuntimeError("a timeline is already being recorded in this process")
    _spans = spans = []
    try:
        yield spans
    finally:
        _spans = None
