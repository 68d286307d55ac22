"""Shared host buffers that carry clips from the curating process to its encoder processes.

A clip crosses as I420 (40 MB at 120 x 352 x 640). A slot is a file in shared memory (/dev/shm)
that both processes map: the GPU copies the clip straight into it (the slot is registered with
CUDA as page-locked memory, so the copy is a DMA that costs the CPU nothing), a CPU clip is copied
in once, and the encoder process reads the frames where they lie. Written to a temporary file and
read back instead, a clip costs two kernel copies and fresh pages in the reader, in system CPU
time the run needs elsewhere (benchmarks/notes.md, tenth session).

Slots are kept and reused for the rest of the run: at most one per clip being encoded at once,
each as large as the largest clip it has held. Each file is named after the process that made
it (and its PID namespace), so files left behind by a process that was killed are removed when
the next pool starts.
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import mmap
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

PREFIX = "mvideo-clip-"
# Sizes are rounded up so that clips a few frames apart share a slot.
GRANULE = 16 << 20


def default_directory() -> str:
    """/dev/shm where the machine has it (Linux), the temporary directory elsewhere."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()


def _pid_namespace() -> int:
    """This process's PID namespace (0 where /proc does not say): containers that share /dev/shm
    (`--ipc=host`) each number their processes anew, so a PID is only checked within its own."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


def _file_name(serial: int) -> str:
    return f"{PREFIX}{_pid_namespace()}-{os.getpid()}-{serial}"


def remove_stale_files(directory: str) -> list[str]:
    """Delete the slot files of processes of this PID namespace that no longer run (killed before
    they could clean up); files of other namespaces are not ours to judge."""
    removed = []
    namespace = _pid_namespace()
    for name in os.listdir(directory):
        match = re.fullmatch(re.escape(PREFIX) + r"(\d+)-(\d+)-\d+", name)
        if match is None or int(match.group(1)) != namespace or _alive(int(match.group(2))):
            continue
        try:
            os.unlink(os.path.join(directory, name))
        except OSError:  # gone already, or another user's
            continue
        removed.append(name)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@dataclass(eq=False)
class _Slot:
    path: str
    capacity: int
    memory: mmap.mmap
    registered_at: int | None = None  # the address CUDA page-locked, once it has been

    @property
    def registered(self) -> bool:
        return self.registered_at is not None

    def array(self, shape: tuple[int, ...]) -> np.ndarray:
        return np.frombuffer(self.memory, dtype=np.uint8, count=int(np.prod(shape))).reshape(shape)


class HostSlots:
    """The curating process's side: `holding(planes)` puts uint8 planes (numpy, or a torch tensor on
    a GPU) into a slot and yields the (path, shape) an encoder process reads with `read_slot`."""

    def __init__(self, directory: str | None = None) -> None:
        self.directory = directory or default_directory()
        for place in {self.directory, tempfile.gettempdir()}:  # where slots go when /dev/shm is full
            for name in remove_stale_files(place):
                log.info("curate removed-stale-slot file=%s", os.path.join(place, name))
        self._free: list[_Slot] = []
        self._all: list[_Slot] = []
        self._lock = threading.Lock()
        self._names = itertools.count()
        self._page_lock = True

    @contextlib.contextmanager
    def holding(self, planes: Any) -> Iterator[tuple[str, tuple[int, ...]]]:
        shape = tuple(int(n) for n in planes.shape)
        slot = self._take(int(np.prod(shape)))
        try:
            self._fill(slot, planes, shape)
            yield slot.path, shape
        finally:
            with self._lock:
                self._free.append(slot)

    def _take(self, nbytes: int) -> _Slot:
        with self._lock:
            fits = [slot for slot in self._free if slot.capacity >= nbytes]
            if fits:
                slot = min(fits, key=lambda s: s.capacity)
                self._free.remove(slot)
                return slot
            # None is large enough: the smallest free one makes way, so slots never outnumber the
            # clips held at once.
            smaller = min(self._free, key=lambda s: s.capacity) if self._free else None
            if smaller is not None:
                self._free.remove(smaller)
                self._all.remove(smaller)
        if smaller is not None:
            _destroy(smaller)
        slot = self._create(-(-nbytes // GRANULE) * GRANULE)
        with self._lock:
            self._all.append(slot)
        return slot

    def _create(self, capacity: int) -> _Slot:
        try:
            return _create_in(self.directory, _file_name(next(self._names)), capacity)
        except OSError as exc:
            fallback = tempfile.gettempdir()
            if self.directory == fallback:
                raise
            # A container's /dev/shm is 64 MB unless it was started with --shm-size or --ipc=host.
            log.warning("curate slots-moved from=%s to=%s reason=%s", self.directory, fallback, exc)
            self.directory = fallback
            return self._create(capacity)

    def _fill(self, slot: _Slot, planes: Any, shape: tuple[int, ...]) -> None:
        target = slot.array(shape)
        if isinstance(planes, np.ndarray) or not planes.is_cuda:
            np.copyto(target, planes if isinstance(planes, np.ndarray) else planes.numpy())
            return
        import torch

        if not slot.registered and self._page_lock:
            self._page_lock = _register(slot)  # once refused, not asked again
        if not slot.registered:  # staged through torch's page-locked memory instead
            from curator.video.frames import to_host

            np.copyto(target, to_host(planes))
            return
        torch.from_numpy(target).copy_(planes, non_blocking=True)
        torch.cuda.current_stream(planes.device).synchronize()

    def close(self) -> None:
        with self._lock:
            slots, self._all, self._free = self._all, [], []
        for slot in slots:
            _destroy(slot)


def _create_in(directory: str, name: str, capacity: int) -> _Slot:
    path = os.path.join(directory, name)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        # Reserved now: a sparse file on a full tmpfs would kill the process (SIGBUS) at the first
        # write past the end of its room, instead of failing here.
        os.posix_fallocate(fd, 0, capacity)
        memory = mmap.mmap(fd, capacity)
    except OSError:
        os.unlink(path)
        raise
    finally:
        os.close(fd)
    return _Slot(path, capacity, memory)


def _register(slot: _Slot) -> bool:
    """Page-lock the slot for CUDA (on every device: `cudaHostRegisterPortable`), so copies from the
    GPU run as DMA without staging. A copy into pageable memory would stall the other threads'
    NVDEC decodes (see `frames.start_host_copy`)."""
    import torch

    address = np.frombuffer(slot.memory, dtype=np.uint8).ctypes.data
    portable = 1
    try:
        torch.cuda.check_error(torch.cuda.cudart().cudaHostRegister(address, slot.capacity, portable))
    except RuntimeError as exc:
        log.warning("curate slots-not-page-locked reason=%s (GPU clips are staged through torch's pinned memory)",
                    exc)
        return False
    slot.registered_at = address
    return True


def _destroy(slot: _Slot) -> None:
    if slot.registered:
        import torch

        torch.cuda.check_error(torch.cuda.cudart().cudaHostUnregister(slot.registered_at))
    slot.memory.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(slot.path)


def read_slot(path: str, shape: tuple[int, ...]) -> np.ndarray:
    """The encoder process's side: the planes in the slot at `path`, read-only, without a copy.
    The mapping lasts as long as the array (or any view of it)."""
    nbytes = int(np.prod(shape))
    with open(path, "rb") as f:
        memory = mmap.mmap(f.fileno(), nbytes, access=mmap.ACCESS_READ)
    return np.frombuffer(memory, dtype=np.uint8, count=nbytes).reshape(shape)
