"""Optical-flow motion scores and the report's motion classes on synthetic camera moves over a real
photograph, and the foreground/background split."""
import cv2
import numpy as np
import pytest

from curator.filters.motion import BAD, GOOD, NEUTRAL, clip_flows, flow_scores, motion_class, pair_starts
from curator.filters.segmentation import split_flow_scores
from megatron_video.config import ConfigError

H, W = 180, 320
THRESHOLDS = {"min_magnitude": 0.01, "min_uniformity": 0.8, "min_consistency": 0.5}  # FilterConfig's defaults


@pytest.fixture(scope="module")
def photo(footage) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(footage / "messi5.jpg")), cv2.COLOR_BGR2RGB)  # 342 x 548


def window(photo, x, y):
    return photo[y:y + H, x:x + W]


def pan(photo, n=36, speed=3):
    return np.stack([window(photo, 20 + speed * i, 60) for i in range(n)])


def shake(photo, n=36, amplitude=4):
    rng = np.random.default_rng(0)
    return np.stack([window(photo, 60 + int(rng.integers(-amplitude, amplitude + 1)),
                            60 + int(rng.integers(-amplitude, amplitude + 1))) for _ in range(n)])


def parallax(photo, n=36):
    """A sideways track: the far half of the picture moves 1 px a frame, the near half 4."""
    frames = []
    for i in range(n):
        frame = window(photo, 20 + i, 60).copy()
        frame[H // 2:] = photo[200:200 + H - H // 2, 20 + 4 * i:20 + 4 * i + W]
        frames.append(frame)
    return np.stack(frames)


def subject(photo, n=36):
    """A still camera; a patch (the 'subject') crosses the frame at 4 px a frame."""
    frames = []
    for i in range(n):
        frame = window(photo, 60, 60).copy()
        frame[60:120, 40 + 4 * i:120 + 4 * i] = photo[0:60, 400:480]
        frames.append(frame)
    return np.stack(frames)


@pytest.mark.parametrize("move, expected", [(pan, GOOD), (shake, BAD), (parallax, GOOD), (subject, GOOD)])
def test_motion_classes(photo, move, expected):
    scores = flow_scores(clip_flows(move(photo))[0], fps=24.0)
    assert motion_class(scores, **THRESHOLDS) == expected, scores


def test_scores_tell_the_moves_apart(photo):
    pan_s, shake_s, parallax_s = (flow_scores(clip_flows(m(photo))[0], 24.0) for m in (pan, shake, parallax))
    # 3 px a frame at 24 fps over 320 px: 0.225 frame widths a second.
    assert pan_s["magnitude"] == pytest.approx(3 * 24 / W, rel=0.1)
    assert pan_s["uniformity"] > 0.9 and pan_s["consistency"] > 0.95
    assert shake_s["uniformity"] > 0.8 and shake_s["consistency"] < 0.5
    assert parallax_s["uniformity"] < 0.7 and parallax_s["consistency"] > 0.95
    still = flow_scores(clip_flows(np.repeat(window(photo, 60, 60)[None], 12, axis=0))[0], 24.0)
    assert still["magnitude"] < 0.001 and motion_class(still, **THRESHOLDS) == NEUTRAL


def test_foreground_moves_while_the_background_stays(photo):
    frames = subject(photo)
    flows, starts = clip_flows(frames)
    masks = np.zeros((len(starts), H, W), dtype=np.float32)
    for p, s in enumerate(starts):  # the patch's true place in each pair's first frame
        masks[p, 60:120, 40 + 4 * s:120 + 4 * s] = 1.0
    split = split_flow_scores(flows, masks, fps=24.0)
    assert split["foreground_motion_magnitude"] > 10 * split["background_motion_magnitude"]
    assert split["foreground_motion_consistency"] > 0.9


def test_pairs_spread_over_the_clip():
    assert pair_starts(100, 4).tolist() == [0, 33, 65, 98]
    assert pair_starts(3, 12).tolist() == [0, 1] and pair_starts(1).tolist() == []


def test_a_named_segmentation_model_that_is_missing_is_refused(tmp_path):
    from curator.filters.config import FilterConfig

    with pytest.raises(ConfigError, match="segmentation_model"):
        FilterConfig(segmentation_model=str(tmp_path / "no-birefnet"))
    assert FilterConfig().segmentation_model == ""  # the default: no split, foreground columns null
