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


@pytest.mark.gpu
def test_text_detected_on_the_gpu_reads_as_on_the_cpu(footage):
    """OCR with its detector as torch calls on the GPU reads the lines ONNX Runtime's CPU path reads
    (imageTextN.png composited near the bottom of a Megamind frame, and the frame without it)."""
    import cv2

    from curator.filters.ocr import read_text

    with av.open(str(footage / "Megamind.avi")) as container:
        frame = next(f.to_ndarray(format="rgb24") for i, f in enumerate(container.decode(video=0)) if i == 50)
    text = cv2.cvtColor(cv2.imread(str(footage / "imageTextN.png")), cv2.COLOR_BGR2RGB)[15:52]
    with_text = frame.copy()
    with_text[481:481 + text.shape[0], 80:80 + text.shape[1]] = text
    frames = np.stack([with_text, frame])
    cpu, gpu = read_text(frames, 0.8), read_text(frames, 0.8, device="cuda")
    assert [len(lines) for lines in gpu] == [len(lines) for lines in cpu] == [2, 0]
    for a, b in zip(cpu[0], gpu[0]):
        assert a.text == b.text and abs(a.top - b.top) <= 2 and abs(a.bottom - b.bottom) <= 2


@pytest.mark.gpu
def test_crop_stages_on_concurrent_threads_share_the_gpu_detector_and_crop_as_on_the_cpu(footage):
    """Eight clip threads at once, each a crop stage call on the GPU path (the process's one batching
    detector), twice over: clip by clip, the lines and crop of the CPU path (ONNX Runtime), to the
    two rows the GPU's detection may move a box by (see the test above)."""
    import threading

    import cv2
    import torch

    from curator.stages.base import WorkerContext
    from curator.stages.crop import CropStage
    from curator.tasks import VideoMeta

    with av.open(str(footage / "Megamind.avi")) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for i, f in enumerate(container.decode(video=0))
                           if 30 <= i < 62])
    text = cv2.cvtColor(cv2.imread(str(footage / "imageTextN.png")), cv2.COLOR_BGR2RGB)[15:52]

    def clip(k: int) -> ClipTask:
        kept = frames.copy()
        if k % 4:  # three of four clips: text at a height of their own near the bottom
            top = 528 - 12 - text.shape[0] - 8 * k
            kept[:, top:top + text.shape[0], 40:40 + text.shape[1]] = text
        small = np.stack([cv2.resize(f, (160, 117), interpolation=cv2.INTER_AREA) for f in kept])
        return ClipTask(source=str(footage / "Megamind.avi"), key=str(k), start_frame=0, end_frame=len(kept),
                        source_fps=24.0, source_meta=VideoMeta(height=528, width=720, decoder="pyav"),
                        analysis=small, source_frames=kept)

    cpu = [CropStage().process(clip(k))[0] for k in range(8)]
    gpu_stage = CropStage(device="cuda")
    gpu_stage.setup(WorkerContext(cores=8, concurrent_tasks=8, device="cuda"))

    def work(task: ClipTask, start: threading.Barrier) -> None:
        start.wait()
        with torch.cuda.stream(torch.cuda.Stream()):  # a worker thread's own stream, as executors give
            gpu_stage.process(task)

    for _ in range(2):
        tasks = [clip(k) for k in range(8)]
        start = threading.Barrier(8)
        threads = [threading.Thread(target=work, args=(task, start)) for task in tasks]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for want, got in zip(cpu, tasks):
            assert got.ok, got.reason
            assert (got.crop.top, got.crop.left, got.crop.right) == (want.crop.top, want.crop.left, want.crop.right)
            assert abs(got.crop.bottom - want.crop.bottom) <= 2, (want.key, want.crop, got.crop)
            assert [len(lines) for lines in got.text_lines] == [len(lines) for lines in want.text_lines]
    assert sum(len(lines) for task in cpu for lines in task.text_lines) == 6 * 2 * 2  # two lines, two frames
