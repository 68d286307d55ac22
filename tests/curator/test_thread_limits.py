"""The local executor caps the libraries' thread pools while its workers run, and gives them back."""
import os
from concurrent.futures import ThreadPoolExecutor
from unittest import mock

import cv2
import pytest
import torch
from threadpoolctl import threadpool_info

from curator.executors import local, thread_limits
from curator.executors.thread_limits import (
    limit_this_thread,
    limited_library_threads,
    per_worker,
)


def pool_threads(user_api: str) -> list[int]:
    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == user_api]


@pytest.mark.parametrize(("cores", "workers", "expected"), [(16, 32, 1), (16, 16, 1), (16, 4, 4), (2, 2, 1), (1, 8, 1)])
def test_the_cores_are_shared_among_the_workers(cores, workers, expected):
    with mock.patch.object(thread_limits, "available_cores", return_value=cores):
        assert per_worker(workers) == expected


def test_process_wide_pools_are_capped_inside_the_block_and_restored_after():
    cv_before, torch_before, blas_before = cv2.getNumThreads(), torch.get_num_threads(), pool_threads("blas")
    target = 1 if cv_before != 1 else 2
    with limited_library_threads(target):
        assert cv2.getNumThreads() == target
        assert torch.get_num_threads() == target
        assert all(n == target for n in pool_threads("blas"))
    after = (cv2.getNumThreads(), torch.get_num_threads(), pool_threads("blas"))
    assert after == (cv_before, torch_before, blas_before)


def test_the_openmp_cap_applies_to_the_worker_thread_that_set_it():
    def report() -> list[int]:
        return pool_threads("openmp")

    calling_thread = report()
    with ThreadPoolExecutor(1) as pool:
        uncapped = pool.submit(report).result()
    assert uncapped, "torch loads an OpenMP runtime"
    target = 1 if uncapped[0] != 1 else 2  # a cap that differs from what a thread starts with
    with ThreadPoolExecutor(1, initializer=limit_this_thread, initargs=(target,)) as pool:
        assert all(n == target for n in pool.submit(report).result())
    assert report() == calling_thread  # per thread: the calling thread keeps its own


def test_a_run_leaves_the_thread_counts_as_it_found_them(footage, make_config, tmp_path):
    before = cv2.getNumThreads(), torch.get_num_threads(), pool_threads("blas")
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "box.mp4").symlink_to(footage / "box.mp4")
    with mock.patch.object(local, "limited_library_threads", wraps=limited_library_threads) as limits:
        from curator.run import curate

        summary = curate(make_config(inputs, tmp_path / "out", workers=2), progress=False)
    assert summary.inputs_by_status == {"done": 1}
    limits.assert_called_once_with(per_worker(4))
    assert (cv2.getNumThreads(), torch.get_num_threads(), pool_threads("blas")) == before


def test_the_cores_shared_out_are_those_the_process_may_run_on(monkeypatch):
    """One process per GPU, each bound to its share of the node: its pools follow the binding."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert thread_limits.per_worker(4) == 2


def test_a_module_another_thread_is_importing_is_waited_for(tmp_path, monkeypatch):
    """The library caps read torch while the TransNetV2 loader thread may still be importing it."""
    import sys
    import threading

    (tmp_path / "slow_module.py").write_text("import time\ntime.sleep(0.5)\nready = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    loader = threading.Thread(target=__import__, args=("slow_module",))
    loader.start()
    while "slow_module" not in sys.modules:  # the loader is inside the import
        pass
    try:
        assert thread_limits.imported("slow_module").ready
        assert thread_limits.imported("never_imported_module") is None
    finally:
        loader.join()
        sys.modules.pop("slow_module", None)
