"""RunMetrics: what a stage adds to a task, how a fan-out shares it, and the flat seconds the ledger
and the benchmark results keep."""
import json
import time

import pytest

from curator.ledger import InputRecord
from curator.metrics import RunMetrics, StageTime
from curator.stages.base import Stage
from curator.tasks import Task


class _FanOut(Stage):
    name = "fan_out"

    def process(self, task: Task) -> list[Task]:
        time.sleep(0.02)
        return [Task(task.source) for _ in range(4)]


class _Broken(Stage):
    name = "broken"

    def process(self, task: Task) -> list[Task]:
        raise ValueError("bad input")


def test_a_stage_adds_its_time_and_a_fan_out_shares_it_exactly(tmp_path):
    outs = _FanOut()(Task("a.mp4"))
    assert len(outs) == 4 and all(set(t.metrics.stages) == {"fan_out"} for t in outs)
    total = RunMetrics()
    for task in outs:
        total.add(task.metrics)
    shares = {t.metrics.wall("fan_out") for t in outs}
    assert len(shares) == 1 and total.wall("fan_out") == pytest.approx(4 * shares.pop())
    assert total.wall("fan_out") >= 0.02
    [failed] = _Broken()(Task("b.mp4"))
    assert failed.status == "failed" and "broken" in failed.metrics.stages  # a failing call is timed too
    assert total.wall("never_ran") == 0.0


def test_flat_seconds_keep_the_ledger_and_benchmark_format():
    metrics = RunMetrics({"decode": StageTime(1.23456, 0.5)})
    assert metrics.seconds() == {"decode": 1.235, "decode_cpu": 0.5}
    metrics.encoder_process_cpu = 2.0
    assert metrics.seconds()["encode_process_cpu"] == 2.0
    assert json.loads(InputRecord("a.mp4", "done", metrics=metrics).row()[9]) == {
        "decode": 1.2346, "decode_cpu": 0.5, "encode_process_cpu": 2.0}
    again = RunMetrics.from_dict(json.loads(json.dumps(metrics.as_dict())))
    assert again == metrics
