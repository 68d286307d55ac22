"""A task leaving its process through an object store (the Ray runner's, NeMo Curator's) carries host
frames, copied on the worker thread's stream: pickled CUDA tensors would be copied on the legacy
default stream, which stalls every decoder of the process."""
import contextlib

import numpy as np

from curator import pipeline
from curator.tasks import ClipTask, FrameAnalysis, VideoTask


class FakeCudaFrames:
    is_cuda = True

    def __init__(self, value: int):
        self.value = value


def test_cuda_frames_become_host_arrays_inside_the_worker_stream(monkeypatch):
    streams = []

    @contextlib.contextmanager
    def stream(device):
        streams.append(device)
        yield

    def to_host(frames):
        assert streams, "copied outside the worker's stream"
        return np.full((2, 4, 4, 3), frames.value, np.uint8)

    monkeypatch.setattr(pipeline, "worker_stream", stream)
    monkeypatch.setattr(pipeline, "to_host", to_host)
    host = np.zeros((2, 4, 4, 3), np.uint8)
    clip = pipeline.frames_to_host(ClipTask(source="a.mp4", source_frames=FakeCudaFrames(7), frames=host), "cuda")
    assert isinstance(clip.source_frames, np.ndarray) and clip.source_frames.max() == 7
    assert clip.frames is host  # host frames stay as they are
    video = VideoTask(source="a.mp4", analysis=FrameAnalysis(small=host, thumbs=host, kept=FakeCudaFrames(3)))
    pipeline.frames_to_host(video, "cuda")
    assert video.analysis.kept.max() == 3 and video.analysis.small is host
    assert streams == ["cuda", "cuda"]


def test_tasks_without_cuda_frames_pass_untouched(monkeypatch):
    monkeypatch.setattr(pipeline, "worker_stream", lambda device: (_ for _ in ()).throw(AssertionError("no copy")))
    task = VideoTask(source="a.mp4")
    assert pipeline.frames_to_host(task, "cpu") is task and task.analysis is None
