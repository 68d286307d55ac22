"""Shared-memory slots carry clips to the encoder processes intact, are reused rather than piling
up, leave nothing behind, and clear the files of killed runs."""
import os
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

from curator.video.host_slots import (
    GRANULE,
    PREFIX,
    HostSlots,
    read_slot,
    remove_stale_files,
)


def _checksum(path: str, shape: tuple[int, ...]) -> tuple[int, tuple[int, ...], bool]:
    planes = read_slot(path, shape)
    return int(planes.astype(np.int64).sum()), planes.shape, planes.flags.writeable


def _slot_files(directory) -> list[str]:
    return sorted(name for name in os.listdir(directory) if name.startswith(PREFIX))


def test_another_process_reads_the_planes_put_in_a_slot(tmp_path):
    planes = np.random.default_rng(0).integers(0, 256, (5, 72, 64), dtype=np.uint8)
    slots = HostSlots(str(tmp_path))
    try:
        with slots.holding(planes) as (path, shape), ProcessPoolExecutor(1) as other:
            total, seen_shape, writeable = other.submit(_checksum, path, shape).result()
        assert (total, seen_shape, writeable) == (int(planes.astype(np.int64).sum()), planes.shape, False)
    finally:
        slots.close()


def test_slots_are_reused_and_grow_and_close_removes_them(tmp_path):
    slots = HostSlots(str(tmp_path))
    small = np.ones((4, 48, 32), dtype=np.uint8)
    with slots.holding(small) as (first, _):
        pass
    with slots.holding(small * 2) as (again, shape):
        assert again == first and (read_slot(again, shape) == 2).all()  # the free slot, refilled
        with slots.holding(small) as (second, _):  # held at once: a slot of its own
            assert second != first
    assert len(_slot_files(tmp_path)) == 2
    big = np.zeros(GRANULE + 1, dtype=np.uint8)
    with slots.holding(big) as (grown, _):
        # No free slot was large enough: the smallest made way, so there are still two.
        assert os.path.getsize(grown) == 2 * GRANULE and len(_slot_files(tmp_path)) == 2
    slots.close()
    assert _slot_files(tmp_path) == []


def test_a_torch_tensor_on_the_cpu_is_put_as_it_is(tmp_path):
    torch = pytest.importorskip("torch")
    planes = torch.arange(4 * 48 * 32, dtype=torch.int64).remainder(251).to(torch.uint8).reshape(4, 48, 32)
    slots = HostSlots(str(tmp_path))
    try:
        with slots.holding(planes) as (path, shape):
            assert np.array_equal(read_slot(path, shape), planes.numpy())
    finally:
        slots.close()


def test_files_of_processes_that_no_longer_run_are_removed(tmp_path):
    """Only in this process's PID namespace: a container sharing /dev/shm numbers its processes
    anew, so one of its live files could carry a PID that is dead here."""
    from curator.video.host_slots import _pid_namespace

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    here = _pid_namespace()
    names = (f"{PREFIX}{here}-{dead}-0", f"{PREFIX}{here}-{os.getpid()}-7", f"{PREFIX}{here + 1}-{dead}-0",
             "unrelated-file")
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    assert remove_stale_files(str(tmp_path)) == [names[0]]
    assert sorted(os.listdir(tmp_path)) == sorted(names[1:])


@pytest.mark.gpu
def test_a_gpu_tensor_is_copied_into_a_page_locked_slot():
    """In the default directory (/dev/shm): a file on the H200 machine's /tmp could not be
    page-locked ("invalid argument"), and its clips are staged through torch's pinned memory."""
    import torch

    planes = torch.randint(0, 256, (6, 96, 64), dtype=torch.uint8, device="cuda")
    slots = HostSlots()
    try:
        with slots.holding(planes) as (path, shape):
            slot = slots._all[0]
            assert slot.registered  # a DMA target: no staging copy through pageable memory
            assert torch.from_numpy(slot.array(shape)).is_pinned()
            assert np.array_equal(read_slot(path, shape), planes.cpu().numpy())
    finally:
        slots.close()


def test_a_full_shared_memory_moves_the_slots_to_the_temporary_directory(tmp_path, monkeypatch):
    """Docker gives a container 64 MB of /dev/shm unless told otherwise: a slot that does not fit
    goes to the temporary directory instead of failing the clip."""
    from curator.video import host_slots

    full, spare = tmp_path / "shm", tmp_path / "tmp"
    full.mkdir()
    spare.mkdir()
    real_create = host_slots._create_in

    def no_room(directory, name, capacity):
        if directory == str(full):
            raise OSError(28, "No space left on device")
        return real_create(directory, name, capacity)

    monkeypatch.setattr(host_slots, "_create_in", no_room)
    monkeypatch.setattr(host_slots.tempfile, "gettempdir", lambda: str(spare))
    slots = HostSlots(str(full))
    try:
        with slots.holding(np.full((2, 24, 16), 7, dtype=np.uint8)) as (path, shape):
            assert os.path.dirname(path) == str(spare) and (read_slot(path, shape) == 7).all()
    finally:
        slots.close()
    assert os.listdir(spare) == []


@pytest.mark.gpu
def test_a_slot_cuda_will_not_page_lock_gets_the_clip_staged(tmp_path, monkeypatch):
    import torch

    from curator.video import host_slots

    asked = []
    monkeypatch.setattr(host_slots, "_register", lambda slot: asked.append(slot) and False)
    planes = torch.randint(0, 256, (6, 96, 64), dtype=torch.uint8, device="cuda")
    slots = HostSlots(str(tmp_path))
    try:
        for _ in range(2):
            with slots.holding(planes) as (path, shape):
                assert np.array_equal(read_slot(path, shape), planes.cpu().numpy())
        assert len(asked) == 1  # refused once: not asked again
    finally:
        slots.close()
