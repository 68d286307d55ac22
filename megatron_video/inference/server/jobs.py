"""The server's job table in SQLite: queued and finished jobs survive a restart.

One connection behind a lock: the HTTP handlers (uvicorn's thread pool) and the worker thread share
it, and the queue bound is checked and the job inserted in one transaction, so concurrent
submissions can never overfill the queue. A job that was running when the server stopped is queued
again at the next start (its partial work is lost, its request is not).
"""
from __future__ import annotations

import json
import pathlib
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass

QUEUED, RUNNING, COMPLETED, FAILED = "queued", "in_progress", "completed", "failed"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    request TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    completed_at REAL,
    video_path TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, created_at);
"""


@dataclass
class Job:
    id: str
    status: str
    request: dict
    created_at: float
    started_at: float | None = None
    completed_at: float | None = None
    video_path: str | None = None
    error: str | None = None


class QueueFull(Exception):
    pass


class JobStore:
    def __init__(self, path: pathlib.Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _row(self, row: tuple) -> Job:
        return Job(row[0], row[1], json.loads(row[2]), *row[3:])

    def submit(self, request: dict, max_queued: int) -> Job:
        """A new queued job, or QueueFull when `max_queued` jobs are already waiting."""
        job = Job(id=f"video_{uuid.uuid4().hex}", status=QUEUED, request=request, created_at=time.time())
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                (queued,) = self._db.execute("SELECT COUNT(*) FROM jobs WHERE status = ?", (QUEUED,)).fetchone()
                if queued >= max_queued:
                    raise QueueFull(f"{queued} jobs are queued (serve.max_queue = {max_queued})")
                self._db.execute("INSERT INTO jobs (id, status, request, created_at) VALUES (?, ?, ?, ?)",
                                 (job.id, job.status, json.dumps(request), job.created_at))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return self._row(row) if row else None

    def claim_next(self) -> Job | None:
        """The oldest queued job, marked running; None when the queue is empty."""
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE status = ? ORDER BY created_at, rowid LIMIT 1",
                                   (QUEUED,)).fetchone()
            if row is None:
                return None
            started = time.time()
            self._db.execute("UPDATE jobs SET status = ?, started_at = ? WHERE id = ?", (RUNNING, started, row[0]))
        job = self._row(row)
        job.status, job.started_at = RUNNING, started
        return job

    def complete(self, job_id: str, video_path: str) -> None:
        with self._lock:
            self._db.execute("UPDATE jobs SET status = ?, completed_at = ?, video_path = ? WHERE id = ?",
                             (COMPLETED, time.time(), video_path, job_id))

    def fail(self, job_id: str, error: str) -> None:
        with self._lock:
            self._db.execute("UPDATE jobs SET status = ?, completed_at = ?, error = ? WHERE id = ?",
                             (FAILED, time.time(), error, job_id))

    def requeue_interrupted(self) -> int:
        """Jobs left running by a stopped server go back to the queue; returns how many."""
        with self._lock:
            return self._db.execute("UPDATE jobs SET status = ?, started_at = NULL WHERE status = ?",
                                    (QUEUED, RUNNING)).rowcount

    def count(self, status: str) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM jobs WHERE status = ?", (status,)).fetchone()[0]
