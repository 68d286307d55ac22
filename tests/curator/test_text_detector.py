"""The shared, batching text detector (curator/filters/text_detector.py), here on the CPU (the GPU
path's code with torch on the CPU): clips submitted at once from many worker threads come back as
each clip's own direct detection, and read as ONNX Runtime's CPU path reads them."""
import threading

import av
import cv2
import numpy as np
import pytest

from curator.filters.ocr import detection_input, ocr_size, read_lines, read_text
from curator.filters.text_detector import BatchedTextDetector, detector_graph, graph_probability
from curator.tracing import recording

MIN_SCORE = 0.8


@pytest.fixture(scope="module")
def clips(footage) -> list[np.ndarray]:
    """Eight two-frame RGB clips cut from Megamind frames, two sizes (so batches group by size),
    half with two lines of OpenCV's imageTextN.png composited at a place of their own."""
    with av.open(str(footage / "Megamind.avi")) as container:
        frames = [f.to_ndarray(format="rgb24") for i, f in enumerate(container.decode(video=0)) if i in (50, 120)]
    text = cv2.cvtColor(cv2.imread(str(footage / "imageTextN.png")), cv2.COLOR_BGR2RGB)[15:52, :300]
    out = []
    for k in range(8):
        height, width = (256, 384) if k % 2 else (224, 320)
        clip = np.stack([f[100:100 + height, 200:200 + width] for f in frames])
        if k < 4:
            clip[:, 20 + 40 * k:20 + 40 * k + text.shape[0], 10:10 + text.shape[1]] = text[:, :width - 10]
        out.append(np.ascontiguousarray(clip))
    return out


def detect_concurrently(detector: BatchedTextDetector, clips: list[np.ndarray]) -> list[np.ndarray]:
    """Each clip's probabilities, all clips submitted at once from a thread each."""
    results: list[np.ndarray | None] = [None] * len(clips)
    start = threading.Barrier(len(clips))

    def work(i: int) -> None:
        start.wait()
        results[i] = detector.probability(detection_input(ocr_size(clips[i])[0]))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(clips))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def boxes(lines) -> list[list[tuple]]:
    return [[(b.top, b.bottom, b.left, b.right, b.text) for b in frame] for frame in lines]


def test_batched_detection_matches_each_clip_alone_under_concurrent_threads(clips):
    graph = detector_graph("cpu")
    alone = [graph_probability(graph, detection_input(ocr_size(clip)[0])) for clip in clips]
    onnx_runtime = [boxes(read_text(clip, MIN_SCORE)) for clip in clips]
    assert [sum(map(len, frame)) for frame in onnx_runtime] == [4, 4, 4, 4, 0, 0, 0, 0]  # two lines a frame

    detector = BatchedTextDetector("cpu", max_batch_frames=6)
    runs = []
    for _ in range(2):
        with recording() as spans:
            probabilities = detect_concurrently(detector, clips)
        batches = [s for s in spans if s[0] == "text_detect"]
        # Batches of several clips, each of one frame size and at most three clips (6 frames): 4 to 7.
        assert 4 <= len(batches) < len(clips)
        for got, want in zip(probabilities, alone):
            assert got.shape == want.shape and got.dtype == np.float32
            assert np.abs(got - want).max() < 1e-5
        runs.append([boxes(read_lines(ocr_size(clip)[0], prob, MIN_SCORE, 1.0))
                     for clip, prob in zip(clips, probabilities)])
    assert runs[0] == runs[1] == onnx_runtime


def test_a_failed_batch_fails_its_callers_and_the_detector_serves_on(clips):
    detector = BatchedTextDetector("cpu")
    with pytest.raises(RuntimeError):
        detector.probability(np.zeros((1, 64, 64, 4), dtype=np.uint8))  # four channels: the first conv refuses
    bgr = detection_input(clips[0])
    assert np.abs(detector.probability(bgr) - graph_probability(detector_graph("cpu"), bgr)).max() < 1e-5


def test_a_detector_that_cannot_load_raises_to_its_caller():
    """No machine has a GPU 99: the load's error reaches the caller instead of leaving it waiting."""
    raised = []

    def make() -> None:
        try:
            BatchedTextDetector("cuda:99")
        except Exception as exc:  # noqa: BLE001 - CPU torch and CUDA torch refuse the device differently
            raised.append(exc)

    thread = threading.Thread(target=make, daemon=True)
    thread.start()
    thread.join(60)
    assert len(raised) == 1


def test_batches_run_padded_to_a_few_sizes(clips, monkeypatch):
    from curator.filters import text_detector

    assert [text_detector.padded_frames(n, 32) for n in (1, 2, 3, 5, 8, 9, 17, 32, 33, 70)] == \
        [1, 2, 4, 8, 8, 16, 32, 32, 64, 96]
    assert [text_detector.padded_frames(n, 6) for n in (3, 5, 6, 7)] == [4, 6, 6, 12]
    seen = []

    def recording_probability(graph, bgr):
        seen.append(len(bgr))
        return graph_probability(graph, bgr)

    monkeypatch.setattr(text_detector, "graph_probability", recording_probability)
    detector = BatchedTextDetector("cpu", max_batch_frames=6)
    graph = detector_graph("cpu")
    for clip in clips[:3]:  # one clip: two frames, three: six, one and a half: three padded to four
        for frames in (clip, np.concatenate([clip, clip, clip]), np.concatenate([clip, clip[:1]])):
            bgr = detection_input(ocr_size(frames)[0])
            got = detector.probability(bgr)
            assert got.shape[0] == len(bgr)
            assert np.abs(got - graph_probability(graph, bgr)).max() < 1e-5
    assert seen == [2, 6, 4] * 3
