"""A new stage is one file and one line in `curator.pipeline.PIPELINE`: a stage written in a module
of its own, registered by that one line, is built from the config and run by the local executor,
which knows nothing of it (set up for its worker, called per clip, torn down at the end)."""
import importlib

from curator import pipeline
from curator.run import curate
from curator.stages.base import WorkerContext
from curator.stages.encode import EncodeStage
from curator.video.synthetic import write_test_video

# What a filter stage looks like: its own settings, built from the config, declaring its
# resources and the task fields it reads.
TINY_STAGE = '''
from dataclasses import dataclass

from curator.stages.base import Resources, Stage
from curator.tasks import SKIPPED

EVENTS = []  # what the executor asked of the stage, in order


@dataclass
class EveryOtherClip(Stage):
    name = "every_other_clip"
    resources = Resources(cpus=0.25)
    keep_odd: bool = False

    @classmethod
    def from_config(cls, cfg):
        return cls(keep_odd=cfg.min_frames % 2 == 1)

    def inputs(self):
        return ["index"]

    def setup(self, ctx):
        EVENTS.append(("setup", ctx))

    def teardown(self):
        EVENTS.append(("teardown",))

    def process(self, task):
        EVENTS.append(("process", task.index))
        if task.index % 2 != self.keep_odd:
            task.reject(SKIPPED, "every other clip")
        return [task]
'''


def test_a_stage_in_a_module_of_its_own_runs_through_the_local_executor(make_config, tmp_path, monkeypatch):
    (tmp_path / "tiny_stage.py").write_text(TINY_STAGE)
    monkeypatch.syspath_prepend(str(tmp_path))
    tiny = importlib.import_module("tiny_stage")
    stages = list(pipeline.PIPELINE)
    stages.insert(stages.index(EncodeStage), tiny.EveryOtherClip)  # the one line of registration
    monkeypatch.setattr(pipeline, "PIPELINE", stages)

    inputs = tmp_path / "in"
    inputs.mkdir()
    write_test_video(inputs / "three_shots.mp4", 96, 128, shots=3, frames_per_shot=60)
    summary = curate(make_config(inputs, tmp_path / "out", workers=2, second_pass=False, min_frames=24),
                     progress=False)

    calls = [index for event, *rest in tiny.EVENTS if event == "process" for index in rest]
    assert sorted(calls) == [0, 1, 2]  # every clip of the three shots, once
    assert summary.clips_written == 2  # clips 0 and 2 kept (min_frames even: keep_odd=False)
    assert summary.inputs_by_status == {"done": 1}
    assert "every_other_clip" in summary.metrics.stages
    setups = [rest[0] for event, *rest in tiny.EVENTS if event == "setup"]
    assert setups == [WorkerContext(setups[0].cores, concurrent_tasks=2, device="cpu")]  # the clip pool's worker
    assert tiny.EVENTS[-1] == ("teardown",)
