"""Processes a test session left behind: every process it starts inherits a mark in its
environment, so at the end the marked processes whose parent is neither the session nor another
marked process are found (orphans, reparented to init: a worker whose parent was killed or never
stopped it), whatever started them (multiprocessing, torch, subprocess) and on a machine
other sessions share. Linux (/proc)."""
from __future__ import annotations

import os
import pathlib
import signal
import time
import uuid

MARK = "MVIDEO_TEST_SESSION"


def mark_session() -> str:
    """Mark every process this one starts from now on; returns the mark."""
    os.environ[MARK] = f"{os.getpid()}-{uuid.uuid4().hex}"
    return os.environ[MARK]


def marked(mark: str) -> dict[int, int]:
    """pid -> parent pid of the live processes carrying `mark` (zombies excluded)."""
    needle = f"{MARK}={mark}".encode()
    found = {}
    for proc in pathlib.Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if needle not in (proc / "environ").read_bytes().split(b"\0"):
                continue
            # stat: "pid (comm) state ppid ...": comm may hold spaces or parentheses.
            state, ppid = (proc / "stat").read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, ValueError):  # gone meanwhile, or not ours to read
            continue
        if state != "Z":
            found[int(proc.name)] = int(ppid)
    return found


def orphans(mark: str, session_pid: int | None = None) -> dict[int, str]:
    """pid -> command line of the marked processes whose parent is not the session's process tree."""
    session_pid = os.getpid() if session_pid is None else session_pid
    found = marked(mark)
    lost = {}
    for pid, ppid in found.items():
        if ppid != session_pid and ppid not in found:
            try:
                lost[pid] = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
            except OSError:
                continue
    return lost


def wait_for_orphans(mark: str, grace_s: float) -> dict[int, str]:
    """The orphans still alive after up to `grace_s` seconds (one may be finishing its exit)."""
    deadline = time.monotonic() + grace_s
    while (lost := orphans(mark)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return lost


def kill_orphans(lost: dict[int, str]) -> None:
    for pid in lost:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
