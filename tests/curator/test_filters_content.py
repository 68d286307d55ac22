"""Faces, burned-in text and aesthetics: OpenCV's cascade on real faces, RapidOCR on OpenCV's text
sample composited onto footage, and DOVER's ONNX interface on a tiny model built here."""
import av
import cv2
import numpy as np
import pytest

from curator.config import CurateConfig
from curator.filters.aesthetic import MEAN, STD, DoverScorer
from curator.filters.config import FilterConfig
from curator.filters.faces import detector, face_count, faces
from curator.filters.ocr import edge_text_rows, text_boxes, text_coverage
from curator.stages.filter_faces import FaceFilterStage
from megatron_video.config import ConfigError

SHOTS = ((20, 99), (99, 155), (155, 201), (201, 270))  # after the fade-in; cuts at 99, 155, 201
FACE_FRAMES = {s: np.linspace(a + 5, b - 5, 3).astype(int) for s, (a, b) in enumerate(SHOTS)}
DOVER_FRAMES = np.arange(99, 155, 4)


@pytest.fixture(scope="module")
def megamind(footage) -> dict[int, np.ndarray]:
    """The full-resolution frames the tests read, by index."""
    wanted = {0, 50, *DOVER_FRAMES.tolist(), *np.concatenate(list(FACE_FRAMES.values())).tolist()}
    with av.open(str(footage / "Megamind.avi")) as container:
        return {i: f.to_ndarray(format="rgb24") for i, f in enumerate(container.decode(video=0)) if i in wanted}


def test_one_face_in_messi5(footage):
    photo = cv2.cvtColor(cv2.imread(str(footage / "messi5.jpg")), cv2.COLOR_BGR2RGB)
    found = faces(detector(), photo)
    assert len(found) == 1
    x, y, w, h = found[0]
    assert 230 <= x + w / 2 <= 300 and 80 <= y + h / 2 <= 130  # Messi's face, 548 x 342 photo


def test_faces_counted_per_megamind_shot(megamind):
    """Shots 1-4 (cuts at 99, 155, 201) each frame one face in close-up; the black first frame
    holds none."""
    cascade = detector()
    for shot, rows in FACE_FRAMES.items():
        assert face_count(cascade, np.stack([megamind[i] for i in rows])) == 1, SHOTS[shot]
    assert len(faces(cascade, megamind[0])) == 0


def test_text_read_and_cropped_from_the_edge_band(footage, megamind):
    """Two lines of imageTextN.png near the bottom of a Megamind frame: read, located, and the crop
    rows cover them; the frame without the text reads nothing."""
    text = cv2.cvtColor(cv2.imread(str(footage / "imageTextN.png")), cv2.COLOR_BGR2RGB)[15:52]
    frame = megamind[50].copy()
    top = 528 - 10 - text.shape[0]
    frame[top:top + text.shape[0], 80:80 + text.shape[1]] = text
    boxes = text_boxes(frame, min_score=0.8)
    assert len(boxes) == 2 and "details are too complex" in boxes[0].text
    assert all(top - 4 <= b.top and b.bottom <= top + text.shape[0] + 4 for b in boxes)
    kept_top, kept_bottom = edge_text_rows(boxes, 0, 528, band_fraction=0.25)
    assert kept_top == 0 and kept_bottom <= top + 4
    assert 0.02 < text_coverage(boxes, 0, 528, 0, 720) < 0.06
    assert text_coverage(boxes, kept_top, kept_bottom, 0, 720) == 0.0
    assert text_boxes(megamind[50], min_score=0.8) == []


def tiny_dover(path, frames=4, size=32):
    """An ONNX model with DOVER's interface (two named 5-D views in, two scores out), each score the
    mean of its view: a check on exactly what the scorer feeds."""
    import onnx
    from onnx import TensorProto, helper

    views = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 3, frames, size, size])
             for name in ("aesthetic_view", "technical_view")]
    outs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1]) for name in ("aesthetic", "technical")]
    nodes = [helper.make_node("ReduceMean", [v.name], [o.name], keepdims=0) for v, o in zip(views, outs)]
    graph = helper.make_graph(nodes, "tiny_dover", views, [
        helper.make_tensor_value_info(o.name, TensorProto.FLOAT, []) for o in outs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_dover_scores_through_onnx_runtime(tmp_path, megamind):
    scorer = DoverScorer(str(tiny_dover(tmp_path / "dover.onnx")))
    grey = np.full((20, 96, 128, 3), 150, dtype=np.uint8)
    mean = float(np.mean((150 - MEAN) / STD))  # every pixel of both views
    scores = scorer.score(grey)
    assert scores["aesthetic_score"] == pytest.approx(1 / (1 + np.exp(-(mean - 0.1107) / 0.07355)), rel=1e-4)
    assert scores["technical_score"] == pytest.approx(1 / (1 + np.exp(-(mean + 0.08285) / 0.03774)), rel=1e-4)
    real = scorer.score(np.stack([megamind[i] for i in DOVER_FRAMES]))
    assert 0 < real["aesthetic_score"] < 1 and real != scores


def test_absent_models_are_skipped_and_missing_ones_refused(tmp_path):
    assert not FilterConfig().runs("aesthetic") and FilterConfig().runs("text")
    with pytest.raises(ConfigError, match="filters.aesthetic_model"):
        FilterConfig(aesthetic_model=str(tmp_path / "dover.onnx"))
    assert FilterConfig(aesthetic_model=str(tiny_dover(tmp_path / "dover.onnx"))).runs("aesthetic")


def test_an_opencv_without_haar_cascades_is_refused_before_any_work(monkeypatch):
    """OpenCV 5 removed the cascades: the face filter's stage refuses at build time, naming the key
    that leaves it out, instead of failing every clip of the run."""
    assert FaceFilterStage.from_config(CurateConfig()) is not None
    monkeypatch.delattr(cv2, "CascadeClassifier")
    with pytest.raises(ConfigError, match="curate.filters.run.*OpenCV .* has no CascadeClassifier"):
        FaceFilterStage.from_config(CurateConfig())
    no_faces = CurateConfig(filters=FilterConfig(run=["colour"]))
    assert FaceFilterStage.from_config(no_faces) is None


def test_text_detector_as_torch_calls_matches_onnx_runtime(footage):
    """The GPU path's detector (the wheel's DBNet graph as torch calls) gives ONNX Runtime's
    probabilities, here on the CPU, on a real frame with text."""
    import torch

    from curator.filters.ocr import detection_input, text_probability
    from curator.filters.text_detector import detector_graph

    text = cv2.cvtColor(cv2.imread(str(footage / "imageTextN.png")), cv2.COLOR_BGR2RGB)
    bgr = detection_input(text[None, :128, :256])
    reference = text_probability(bgr)
    x = torch.from_numpy(bgr).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    assert np.abs(detector_graph("cpu")(x).numpy() - reference).max() < 1e-4
    assert reference.max() > 0.9  # text found: the comparison is not of two empty maps
