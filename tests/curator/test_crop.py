"""Black bars and burned-in text bands are cropped; clean real footage is left whole."""
import av
import cv2
import numpy as np
import pytest

from curator.stages.crop import find_crop
from curator.stages.resize import aspect_box

ARGS = {"black_level": 24, "band_fraction": 0.25, "edge_density": 0.12}


def frames_of(path, count=99, size=(118, 160)):
    """The first `count` frames at analysis size: Megamind's whole first shot, fade-in included."""
    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24", width=size[1], height=size[0]))
            if len(frames) == count:
                break
    return np.stack(frames)


@pytest.mark.parametrize("name", ["Megamind.avi", "vtest.avi", "box.mp4", "cup.mp4"])
def test_clean_footage_is_not_cropped(footage, name):
    frames = frames_of(footage / name)
    box = find_crop(frames, 118, 160, **ARGS)
    assert box.as_list() == [0, 118, 0, 160], name


def test_letterbox_bars_are_removed(footage):
    frames = frames_of(footage / "Megamind.avi")
    boxed = np.zeros((len(frames), 118 + 40, 160 + 16, 3), dtype=np.uint8)
    boxed[:, 20:138, 8:168] = frames
    box = find_crop(boxed, 158 * 4, 176 * 4, **ARGS)  # a 4x larger source: the box is scaled back
    assert 20 * 4 <= box.top <= 22 * 4 and 136 * 4 <= box.bottom <= 138 * 4
    assert 8 * 4 <= box.left <= 10 * 4 and 166 * 4 <= box.right <= 168 * 4


def test_burned_in_caption_is_removed(footage):
    """A white caption with a black outline, drawn at source resolution on Megamind's first shot."""
    caption_top = 500 - 33  # baseline 500, cap height ~29 px at scale 1.3, outline 4 px
    frames = []
    with av.open(str(footage / "Megamind.avi")) as container:
        for frame in container.decode(video=0):
            rgb = frame.to_ndarray(format="rgb24")
            for color, thickness in (((0, 0, 0), 8), ((255, 255, 255), 2)):
                cv2.putText(rgb, "The quick brown fox jumps", (40, 500), cv2.FONT_HERSHEY_SIMPLEX, 1.3, color,
                            thickness, cv2.LINE_AA)
            frames.append(cv2.resize(rgb, (160, 118), interpolation=cv2.INTER_AREA))
            if len(frames) == 99:
                break
    box = find_crop(np.stack(frames), 528, 720, **ARGS)
    assert 0.75 * 528 <= box.bottom <= caption_top
    assert (box.top, box.left, box.right) == (0, 0, 720)


def test_aspect_box_is_centred_and_exact():
    from curator.tasks import CropBox

    box = aspect_box(CropBox(0, 576, 0, 768), 352, 640)
    assert (box.right - box.left, box.bottom - box.top) == (768, 422)
    assert box.top == (576 - 422) // 2
