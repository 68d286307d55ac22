"""Helper processes that end with the process they serve, however that one ends (SIGKILL too).

A helper whose client is killed is reparented to init and, unless something tells it, runs on
forever: an encoder process holds its pool's queues itself (so no EOF ever comes), a
multiprocessing Manager server waits for a shutdown message nobody will send. A parent-death
signal (PR_SET_PDEATHSIG) is not enough either: it follows the *thread* that started the helper,
and a helper started by a fork server has the server as its parent. A pidfd of the client becomes
readable when the client exits, whoever started whom (Linux 5.3+; elsewhere nothing is watched).
"""
from __future__ import annotations

import os
import select
import threading


def exit_with(client_pid: int) -> None:
    """From now on, end this process as soon as `client_pid` exits (run first in the helper)."""
    if not hasattr(os, "pidfd_open"):
        return
    try:
        pidfd = os.pidfd_open(client_pid)
    except ProcessLookupError:  # it is gone already
        os._exit(1)

    def watch() -> None:
        select.select([pidfd], [], [])
        os._exit(1)

    threading.Thread(target=watch, name=f"exit-with-{client_pid}", daemon=True).start()
