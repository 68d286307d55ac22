"""Encoding in the process pool gives the same MP4 bytes as encoding in the worker thread, its
processes run at the configured CPU priority below the curating process's, and a run started from
stdin (which cannot start processes) encodes in its threads instead."""
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from curator.config import CurateConfig
from curator.executors import local
from curator.ledger import Ledger
from curator.run import curate
from curator.stages.base import WorkerContext
from curator.stages.encode import EncodeStage
from curator.video import pyav_io
from curator.video.encode_pool import ENCODER_NICENESS, EncodePool
from megatron_video.testing import leaks


def test_process_pool_encodes_the_same_clips_as_the_worker_threads(footage, make_config, read_shards, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    shutil.copy(footage / "Megamind.avi", inputs)
    runs = {}
    for processes in (0, 2):
        output = tmp_path / f"processes{processes}"
        summary = curate(make_config(inputs, output, workers=2, encode_processes=processes), progress=False)
        assert summary.inputs_by_status == {"done": 1}
        # The encoder processes report their CPU time: the driver's own accounting cannot see them.
        assert (summary.metrics.encoder_process_cpu > 0) == (processes > 0)
        runs[processes] = {key: mp4 for key, _, mp4 in read_shards(output)}
    assert len(runs[0]) >= 3  # Megamind's hard cuts give several clips
    # x264 is deterministic for a given input and thread count: the clips are byte-identical.
    # (The demo's clips are 112 px wide, an odd number of macroblocks: see the next test.)
    assert runs[2] == runs[0]


def _x264_settings(mp4: bytes) -> dict[str, str]:
    """The settings libx264 writes into its SEI message at the start of the stream."""
    text = mp4[mp4.index(b"options: "):].split(b"\x00", 1)[0].decode()
    return dict(item.split("=", 1) for item in text[len("options: "):].split() if "=" in item)


@pytest.mark.parametrize(("width", "mbtree"), [(112, "0"), (120, "1"), (128, "1"), (176, "0"), (640, "1")])
def test_macroblock_tree_is_off_where_libx264_reads_uninitialised_memory(width, mbtree):
    """At an odd number of 16-px macroblocks across, libx264's mbtree reads uninitialised stack
    memory (valgrind), so a clip's bytes depended on what ran on the encoding thread before."""
    planes = np.random.default_rng(width).integers(0, 255, (6, 48, width), dtype=np.uint8)
    settings = _x264_settings(pyav_io.encode_i420(planes, 12.0, 23, "veryfast", 1))
    assert settings["mbtree"] == mbtree and settings["crf"] == "23.0"


def _scheduling() -> tuple[int, int]:
    return os.sched_getscheduler(0), os.nice(0)


@pytest.mark.parametrize("priority", ["idle", "nice", "normal"])
def test_encoder_processes_run_at_the_configured_cpu_priority(priority):
    ours = _scheduling()
    expected = {"idle": (os.SCHED_IDLE, ours[1]), "nice": (ours[0], min(19, ours[1] + ENCODER_NICENESS)),
                "normal": ours}[priority]
    pool = EncodePool(1, priority)
    try:
        assert pool._pool.submit(_scheduling).result() == expected
    finally:
        pool.close()


def test_the_encode_stage_gives_its_pool_the_configured_priority(tmp_path):
    stage = EncodeStage(device="cpu", encoder_priority="nice")
    stage.setup(WorkerContext(cores=2, concurrent_tasks=2))
    try:
        assert stage.pool._pool.submit(_scheduling).result()[1] == min(19, os.nice(0) + ENCODER_NICENESS)
    finally:
        stage.teardown()


def test_a_pool_whose_processes_died_starts_again_and_the_clip_is_encoded(tmp_path):
    """An encoder process killed (for memory, by a crash) breaks the whole pool: the clips in flight
    are tried once more on a new pool instead of failing, and the run goes on."""
    planes = np.full((4, 48, 32), 128, dtype=np.uint8)  # 4 frames of 32x32 I420
    pool = EncodePool(2)
    try:
        first, _ = pool.encode(planes, 12.0, 23, "ultrafast", 1)
        old = list(pool._pool._processes.values())
        for process in old:
            process.kill()
        for process in old:
            process.join(timeout=30)
        again, _ = pool.encode(planes, 12.0, 23, "ultrafast", 1)
        assert again == first and pool._generation == 1
        assert not set(pool._pool._processes) & {p.pid for p in old}
    finally:
        pool.close()


def test_a_run_from_stdin_encodes_in_its_threads(footage, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    shutil.copy(footage / "cup.mp4", inputs)
    code = ("from curator.config import CurateConfig\n"
            "from curator.run import curate\n"
            f"s = curate(CurateConfig(input={str(inputs)!r}, output={str(tmp_path / 'out')!r}, workers=2, "
            "device='cpu'), progress=False)\n"
            "print(s.inputs_by_status, s.clips_written)\n")
    out = subprocess.run([sys.executable, "-"], input=code, capture_output=True, text=True, timeout=300,
                         check=False, cwd=pathlib.Path(__file__).parents[2])
    assert out.returncode == 0, out.stderr[-2000:]
    status, clips = out.stdout.strip().rsplit(" ", 1)
    assert status == "{'done': 1}" and int(clips) > 0, out.stderr[-2000:]
    assert "encode-in-threads" in out.stderr


def test_a_script_without_a_main_guard_stops_with_the_cure_and_records_nothing(footage, tmp_path):
    """Each encoder process imports the main script first; unguarded, its curate() call would run
    again there. It refuses, and the run that started the processes stops naming the fix, its input
    left unfinished (not failed) for the rerun."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    shutil.copy(footage / "cup.mp4", inputs)
    script = tmp_path / "unguarded.py"
    script.write_text("from curator.config import CurateConfig\n"
                      "from curator.run import curate\n"
                      f"curate(CurateConfig(input={str(inputs)!r}, output={str(tmp_path / 'out')!r}, workers=2, "
                      "device='cpu'), progress=False)\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, check=False,
                         cwd=pathlib.Path(__file__).parents[2])
    assert out.returncode != 0
    assert "RunFault" in out.stderr and "if __name__ == '__main__':" in out.stderr
    assert "curate() was called while multiprocessing imported the main script" in out.stderr
    ledger = Ledger(str(tmp_path / "out" / "ledger.sqlite"))
    assert ledger.status_counts() == {}
    ledger.close()


def _clip_context(executor: str, cfg: CurateConfig) -> WorkerContext:
    """The context each executor sets a clip's stages up in (a Ray actor runs the local executor)."""
    if executor == "local":
        return local.job_contexts(cfg)[1]
    from curator.executors.nemo import worker_context

    return worker_context(cfg, gpus=0.0)


@pytest.mark.parametrize(("executor", "threads", "processes"), [
    ("local", {"workers": 4}, 4), ("local", {"workers": 1}, 0),
    ("nemo", {"workers": 4}, 0),  # NeMo Curator's workers are single-threaded processes
])
def test_encoder_processes_default_to_the_threads_that_share_one_gil(executor, threads, processes):
    cfg = CurateConfig(executor=executor, device="cpu", **threads)
    assert EncodeStage.from_config(cfg).processes_for(_clip_context(executor, cfg)) == processes
    cfg = CurateConfig(executor=executor, device="cpu", encode_processes=2, **threads)
    assert EncodeStage.from_config(cfg).processes_for(_clip_context(executor, cfg)) == 2


def test_x264_threads_share_the_cores_among_the_clips_encoded_at_once(monkeypatch):
    monkeypatch.setattr(local, "available_cores", lambda: 32)
    cfg = CurateConfig(executor="local", workers=8, device="cpu")
    assert EncodeStage.from_config(cfg).x264_threads_for(_clip_context("local", cfg)) == 4
    cfg = CurateConfig(executor="local", workers=8, encode_threads=3, device="cpu")
    assert EncodeStage.from_config(cfg).x264_threads_for(_clip_context("local", cfg)) == 3


KILLED_CLIENT = """
import time
from curator.video.encode_pool import EncodePool
pool = EncodePool(2)
pool._pool.submit(int).result()
print("up", flush=True)
time.sleep(600)
"""


def test_a_killed_run_leaves_no_encoder_process_fork_server_or_tracker(tmp_path):
    """SIGKILL of the curating process (an OOM kill): its encoder processes end with it, and so the
    fork server and the resource tracker they kept alive."""
    mark = f"encode-pool-{os.getpid()}-{tmp_path.name}"
    client = subprocess.Popen([sys.executable, "-c", KILLED_CLIENT], stdout=subprocess.PIPE, text=True,
                              cwd=pathlib.Path(__file__).resolve().parents[2], env={**os.environ, leaks.MARK: mark})
    try:
        assert client.stdout.readline().strip() == "up"
        # The client, its resource tracker, fork server and encoder processes; none orphaned yet.
        assert len(leaks.marked(mark)) >= 4 and leaks.orphans(mark) == {}
    finally:
        client.kill()
        client.wait()
    left = leaks.wait_for_orphans(mark, grace_s=60)
    leaks.kill_orphans(left)
    assert left == {}

