"""Encoding in the process pool gives the same MP4 bytes as encoding in the worker thread, and its
processes run at a lower CPU priority than the curating process."""
import os
import shutil

from curator.run import curate
from curator.video.encode_pool import ENCODER_NICENESS, EncodePool


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
        assert (summary.stage_seconds.get("encode_process_cpu", 0.0) > 0) == (processes > 0)
        runs[processes] = {key: mp4 for key, _, mp4 in read_shards(output)}
    assert len(runs[0]) >= 3  # Megamind's hard cuts give several clips
    # x264 is deterministic for a given input and thread count: the clips are byte-identical.
    assert runs[2] == runs[0]


def _niceness() -> int:
    return os.nice(0)


def test_encoder_processes_run_at_a_lower_cpu_priority_than_the_curating_process():
    pool = EncodePool(1)
    try:
        assert pool._pool.submit(_niceness).result() == min(19, os.nice(0) + ENCODER_NICENESS)
    finally:
        pool.close()
