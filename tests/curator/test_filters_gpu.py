"""The filter stages on the GPU path's CUDA frames score as on the CPU path's numpy frames (each
filter downscales on the device, then reads the small frames on the host)."""
import av
import numpy as np
import pytest

from curator.stages.filter_colour import ColourFilterStage
from curator.stages.filter_duplicates import DuplicateHashStage
from curator.stages.filter_motion import MotionFilterStage
from curator.stages.filter_stillness import StillnessFilterStage
from curator.tasks import ClipTask


@pytest.mark.gpu
def test_filters_score_cuda_frames_as_numpy_frames(footage):
    import torch

    with av.open(str(footage / "Megamind.avi")) as container:
        frames = np.stack([f.to_ndarray(format="rgb24", width=640, height=352)
                           for i, f in enumerate(container.decode(video=0)) if 99 <= i < 155])
    stages = [ColourFilterStage(), StillnessFilterStage(), DuplicateHashStage(), MotionFilterStage(device="cuda")]
    scores = []
    for clip_frames in (frames, torch.from_numpy(frames).cuda()):
        task = ClipTask(source="megamind", key="k", frames=clip_frames, num_frames=len(frames))
        for stage in stages:
            task = stage(task)[0]
        assert task.ok, task.reason
        scores.append(task.extra)
    cpu, gpu = scores
    assert set(cpu) == set(gpu)
    for name in ("colourfulness", "hue_spread", "motion_magnitude", "motion_uniformity", "motion_consistency"):
        assert gpu[name] == pytest.approx(cpu[name], rel=0.1, abs=0.02), name
    assert gpu["still_fraction"] == cpu["still_fraction"]
    hashes = np.array([[cpu[f"phash_{i}"], gpu[f"phash_{i}"]] for i in range(3)], dtype=np.int64).view(np.uint64)
    assert all((int(a) ^ int(b)).bit_count() <= 6 for a, b in hashes)
