"""How every DataLoader of the project runs its workers: persistent, spawned, and finishing their
sends before they exit.

Spawned, not forked: the training process holds CUDA, tokenizer and NCCL threads by then, and a
forked worker can deadlock on a lock one of them held (seen on the GPU machine).

Finishing sends: a worker hands its batches to a multiprocessing queue whose feeder thread (a
daemon thread) moves the tensors to shared memory and sends them. At shutdown torch's worker loop
stops without waiting for that thread, so the interpreter finalizes while the feeder may still be
freeing a batch's tensors; a daemon thread that reaches for the GIL then is ended by pthread_exit
through torch's C++ frames, and std::terminate aborts the worker ("DataLoader worker ... killed
by signal: Aborted" in the parent, after large batches). Joining the feeder at exit, before
finalization, lets it finish.
"""
from __future__ import annotations

import atexit
import threading

# A feeder's remaining sends are handles to shared memory: quick unless the parent stopped
# reading, and the parent kills a worker that has not exited after its own timeout anyway.
FEEDER_JOIN_S = 10.0


def _join_queue_feeders() -> None:
    for thread in threading.enumerate():
        if thread.name == "QueueFeederThread" and thread is not threading.current_thread():
            thread.join(timeout=FEEDER_JOIN_S)


def finish_sends_at_exit(worker_id: int) -> None:
    """worker_init_fn: join the worker's queue feeder threads when it exits (module docstring)."""
    atexit.register(_join_queue_feeders)


def worker_options(workers: int) -> dict:
    """DataLoader keyword arguments for `workers` worker processes (none: loading in the caller)."""
    if workers == 0:
        return {"num_workers": 0}
    return {"num_workers": workers, "persistent_workers": True, "multiprocessing_context": "spawn",
            "worker_init_fn": finish_sends_at_exit}
