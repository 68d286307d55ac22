"""The stage contract records an input's failure and goes on, but lets a fault of the run itself
(`RunFault`) through, so the run stops with the input unfinished for the rerun."""
import pytest

from curator.errors import RunFault
from curator.stages.base import Stage
from curator.tasks import FAILED, Task


class Raising(Stage):
    name = "raising"
    error: Exception = ValueError("unreadable frame")

    def process(self, task):
        raise self.error


def test_an_inputs_error_marks_it_failed_and_the_run_goes_on():
    [out] = Raising()(Task(source="a.mp4"))
    assert out.status == FAILED and out.reason == "raising: ValueError: unreadable frame"


def test_a_run_fault_stops_the_run():
    stage = Raising()
    stage.error = RunFault("encoder processes died")
    task = Task(source="a.mp4")
    with pytest.raises(RunFault):
        stage(task)
    assert task.ok  # not recorded as the input's failure
