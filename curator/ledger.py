"""The ledger: an embedded SQLite record of every input, shard and clip of an output directory.

It is what makes reruns cheap and crashes harmless. An input is finished (done, failed or skipped)
only once its row says so; a shard exists only once its row is committed, in the same transaction
as its clips and the inputs it completes, so after a kill -9 every input is either wholly inside
committed shards or redone, and redone clips whose deterministic key is already committed are
dropped instead of duplicated.
"""
from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from curator.metrics import RunMetrics
from curator.tasks import FAILED, VideoMeta

DONE = "done"
FINISHED = ("done", "failed", "skipped")

SCHEMA = """
CREATE TABLE IF NOT EXISTS inputs (
    source TEXT PRIMARY KEY, status TEXT NOT NULL, reason TEXT, codec TEXT, duration_s REAL,
    width INTEGER, height INTEGER, fps REAL, clips INTEGER, timings TEXT, updated REAL);
CREATE TABLE IF NOT EXISTS shards (name TEXT PRIMARY KEY, clips INTEGER, committed REAL);
CREATE TABLE IF NOT EXISTS clips (
    key TEXT PRIMARY KEY, source TEXT NOT NULL, shard TEXT NOT NULL, start_frame INTEGER, end_frame INTEGER);
CREATE TABLE IF NOT EXISTS starts (source TEXT PRIMARY KEY, attempts INTEGER NOT NULL);
"""
# Columns added after the first ledgers were written: opening an older ledger adds them.
ADDED_INPUT_COLUMNS = {"decoder": "TEXT", "notes": "TEXT"}
INPUT_COLUMNS = ("source", "status", "reason", "codec", "duration_s", "width", "height", "fps", "clips", "timings",
                 "updated", "decoder", "notes")
INSERT_INPUT = (f"INSERT OR REPLACE INTO inputs ({', '.join(INPUT_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(INPUT_COLUMNS))})")


@dataclass
class InputRecord:
    source: str
    status: str
    reason: str = ""
    meta: VideoMeta | None = None
    clips: int = 0
    metrics: RunMetrics = field(default_factory=RunMetrics)

    def row(self) -> tuple:
        m = self.meta or VideoMeta()
        return (self.source, self.status, self.reason, m.codec, m.duration_s, m.width, m.height, m.fps,
                self.clips, self.metrics.to_json(), time.time(), m.decoder,
                "; ".join(m.notes))


@dataclass
class ClipRow:
    key: str
    source: str
    shard: str
    start_frame: int
    end_frame: int


class Ledger:
    def __init__(self, path: str):
        self.path = path
        # One connection shared by the writer's callers; the lock serialises them.
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        present = {row[1] for row in self._db.execute("PRAGMA table_info(inputs)")}
        for column, kind in ADDED_INPUT_COLUMNS.items():
            if column not in present:
                self._db.execute(f"ALTER TABLE inputs ADD COLUMN {column} {kind}")
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def finished_sources(self, retry_failed: bool = False) -> set[str]:
        statuses = ("done", "skipped") if retry_failed else FINISHED
        marks = ",".join("?" * len(statuses))
        rows = self._db.execute(f"SELECT source FROM inputs WHERE status IN ({marks})", statuses)
        return {r[0] for r in rows}

    def record_start(self, source: str) -> None:
        """`source` is about to be decoded by this run: a run that dies with it in flight (a crash in
        native decoding code) leaves the count for the next run to see."""
        with self._transaction() as db:
            db.execute("INSERT INTO starts VALUES (?, 1) ON CONFLICT(source) DO UPDATE SET attempts = attempts + 1",
                       (source,))

    def record_out_of_flight(self, source: str) -> None:
        """Nothing of `source` runs any more (its clips may wait for a shard): a death from now on
        is not its doing."""
        with self._transaction() as db:
            db.execute("DELETE FROM starts WHERE source = ?", (source,))

    def interrupted_starts(self) -> dict[str, int]:
        """Unfinished inputs that an earlier run started and died with in flight: source -> starts."""
        rows = self._db.execute("SELECT s.source, s.attempts FROM starts s LEFT JOIN inputs i ON i.source = s.source "
                                "WHERE i.status IS NULL OR i.status NOT IN ('done', 'failed', 'skipped')")
        return dict(rows.fetchall())

    def committed_keys(self) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT key FROM clips")}

    def committed_clips_by_source(self) -> dict[str, int]:
        return dict(self._db.execute("SELECT source, COUNT(*) FROM clips GROUP BY source").fetchall())

    def shard_names(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT name FROM shards ORDER BY name")]

    def status_counts(self) -> dict[str, int]:
        return dict(self._db.execute("SELECT status, COUNT(*) FROM inputs GROUP BY status").fetchall())

    def reason_counts(self) -> dict[str, int]:
        """Inputs not curated (failed or skipped), counted by the kind of reason: the reason's text
        before its first colon ("tiny", "low resolution", "corrupt", "crashed", ...)."""
        rows = self._db.execute("SELECT reason FROM inputs WHERE status IN ('failed', 'skipped')")
        counts: dict[str, int] = {}
        for (reason,) in rows.fetchall():
            kind = (reason or "unknown").split(":", 1)[0].strip()
            counts[kind] = counts.get(kind, 0) + 1
        return dict(sorted(counts.items()))

    def inputs(self) -> list[dict]:
        cursor = self._db.execute("SELECT * FROM inputs ORDER BY source")
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]

    def record_inputs(self, records: list[InputRecord]) -> None:
        with self._transaction() as db:
            db.executemany(INSERT_INPUT, [r.row() for r in records])

    def commit_shard(self, name: str, clips: list[ClipRow], finished: list[InputRecord],
                     publish: Callable[[], None]) -> None:
        """Record a shard, its clips and the inputs it completes, then `publish` (rename the files
        into place) and commit. If anything fails before the commit, nothing is recorded; files
        renamed by a crash right before the commit are orphans that `Ledger` users delete."""
        with self._transaction() as db:
            db.execute("INSERT INTO shards VALUES (?,?,?)", (name, len(clips), time.time()))
            db.executemany("INSERT INTO clips VALUES (?,?,?,?,?)",
                           [(c.key, c.source, c.shard, c.start_frame, c.end_frame) for c in clips])
            db.executemany(INSERT_INPUT, [r.row() for r in finished])
            publish()


def read_outcomes(path: str) -> tuple[dict[str, int], list[dict]]:
    """Inputs by status, and inputs that were not done grouped by status and reason (numbers in a
    reason become N, so "too short: 1.20 s < 3.00 s" groups with every other too-short input).
    Opens the ledger read-only: safe beside a running curation, and it never creates a ledger."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT status, COALESCE(reason, '') FROM inputs").fetchall()
    finally:
        db.close()
    by_status: dict[str, int] = {}
    by_reason: dict[tuple[str, str], dict] = {}
    for status, reason in rows:
        by_status[status] = by_status.get(status, 0) + 1
        if status != DONE:
            group = (status, re.sub(r"\d+(\.\d+)?", "N", reason))
            entry = by_reason.setdefault(group, {"status": status, "reason": group[1], "inputs": 0, "example": reason})
            entry["inputs"] += 1
    return by_status, sorted(by_reason.values(), key=lambda e: (-e["inputs"], e["status"], e["reason"]))


def final_status(committed: int, rejections: list[tuple[str, str]]) -> tuple[str, str]:
    """An input with at least one committed clip is done; otherwise it takes the status and reason
    of its first rejected clip."""
    if committed:
        reason = f"{len(rejections)} clip(s) rejected: {rejections[0][1]}" if rejections else ""
        return DONE, reason
    return rejections[0] if rejections else (FAILED, "no clips")
