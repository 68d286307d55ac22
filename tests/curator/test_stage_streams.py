"""Every stage that declares a GPU runs on its worker thread's own CUDA stream, entered once by the
stage contract (`Stage.__call__`) rather than by each stage, so no stage can forget it."""
import contextlib

import pytest

from curator.config import CurateConfig
from curator.stages import (
    base,
    clip_length,
    crop,
    decode,
    encode,
    filter_colour,
    filter_duplicates,
    filter_faces,
    filter_motion,
    filter_stillness,
    resize,
    shard_writer,
    shots,
)
from curator.stages.base import Stage
from curator.tasks import Task

GPU_STAGES = [(decode, "DecodeStage"), (resize, "ResizeStage"), (encode, "EncodeStage"),
              (shots, "ShotDetectionStage")]


def _stage_on(gpus: float, seen: list) -> Stage:
    class Probe(Stage):
        name = "probe_stream"

        resources = base.Resources(gpus=gpus)

        def process(self, task):
            seen.append(list(entered))
            return [task]

    entered: list = []
    return Probe(device="cuda"), entered


@pytest.mark.parametrize("gpus, expected", [(0.1, ["cuda"]), (0.0, [])])
def test_process_runs_inside_the_stream_only_for_stages_declaring_a_gpu(monkeypatch, gpus, expected):
    seen: list = []
    stage, entered = _stage_on(gpus, seen)

    @contextlib.contextmanager
    def stream(device):
        entered.append(device)
        yield
        entered.pop()

    monkeypatch.setattr(base, "worker_stream", stream)
    out = stage(Task(source="a.mp4"))
    # Entered around process() and left after it.
    assert out[0].ok and seen == [expected] and entered == []


@pytest.mark.parametrize("module, cls", GPU_STAGES)
def test_every_stage_with_gpu_work_declares_the_gpu(monkeypatch, module, cls):
    # The GPU path without a GPU: libx264 still encodes, but the frames reach it on the device.
    monkeypatch.setattr(module, "use_gpu", lambda device: True)
    monkeypatch.setattr(module, "use_nvenc", lambda device: False, raising=False)
    assert getattr(module, cls).from_config(CurateConfig(device="cuda")).resources.gpus > 0


@pytest.mark.parametrize("module, cls", [(crop, "CropStage"), (filter_colour, "ColourFilterStage"),
                                         (filter_stillness, "StillnessFilterStage"),
                                         (filter_duplicates, "DuplicateHashStage"),
                                         (filter_motion, "MotionFilterStage"), (filter_faces, "FaceFilterStage")])
def test_stages_reading_clip_frames_declare_the_gpu(monkeypatch, module, cls):
    """On the GPU path a clip's frames are CUDA tensors each of these downscales there: off the
    legacy default stream, which stalls every decoder of the process."""
    monkeypatch.setattr(base, "use_gpu", lambda device: True)
    assert getattr(module, cls).from_config(CurateConfig(device="cuda")).resources.gpus > 0
    monkeypatch.setattr(base, "use_gpu", lambda device: False)
    assert getattr(module, cls).from_config(CurateConfig(device="cuda")).resources.gpus == 0


@pytest.mark.parametrize("module, cls", [(clip_length, "ClipLengthStage"), (shard_writer, "ShardWriterStage")])
def test_cpu_stages_declare_no_gpu(module, cls):
    assert getattr(module, cls).from_config(CurateConfig(device="cuda")).resources.gpus == 0
