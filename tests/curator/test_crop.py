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


def megamind_with(footage, draw) -> np.ndarray:
    """Megamind's first shot (720x528) with `draw(rgb, frame_index)` applied at source resolution,
    then brought to analysis size."""
    frames = []
    with av.open(str(footage / "Megamind.avi")) as container:
        for i, frame in enumerate(container.decode(video=0)):
            rgb = frame.to_ndarray(format="rgb24")
            draw(rgb, i)
            frames.append(cv2.resize(rgb, (160, 118), interpolation=cv2.INTER_AREA))
            if len(frames) == 99:
                break
    return np.stack(frames)


def test_burned_in_caption_is_removed(footage):
    """A white caption with a black outline, drawn at source resolution on Megamind's first shot."""
    caption_top = 500 - 33  # baseline 500, cap height ~29 px at scale 1.3, outline 4 px

    def caption(rgb, _):
        for color, thickness in (((0, 0, 0), 8), ((255, 255, 255), 2)):
            cv2.putText(rgb, "The quick brown fox jumps", (40, 500), cv2.FONT_HERSHEY_SIMPLEX, 1.3, color,
                        thickness, cv2.LINE_AA)

    box = find_crop(megamind_with(footage, caption), 528, 720, **ARGS)
    assert 0.75 * 528 <= box.bottom <= caption_top
    assert (box.top, box.left, box.right) == (0, 0, 720)


@pytest.mark.parametrize("speed", [1, 4, 8])
def test_scrolling_ticker_is_removed(footage, speed):
    """A news ticker on a band of its own, scrolling left `speed` source pixels per frame: 0.2 to
    1.8 analysis pixels, never still between two frames."""
    headlines = "BREAKING NEWS  markets rally as rates hold  weather: sunny  sports: 3-1  " * 3

    def ticker(rgb, i):
        cv2.rectangle(rgb, (0, 470), (720, 510), (20, 20, 120), -1)
        cv2.putText(rgb, headlines, (20 - speed * i, 500), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2,
                    cv2.LINE_AA)

    box = find_crop(megamind_with(footage, ticker), 528, 720, **ARGS)
    assert 0.75 * 528 <= box.bottom <= 470
    assert (box.top, box.left, box.right) == (0, 0, 720)


@pytest.mark.parametrize("speed", [1, 3, 6])
def test_a_camera_pan_is_not_taken_for_scrolling_text(footage, speed):
    """A sideways pan over a detailed photo moves every row alike: nothing is cropped."""
    photo = cv2.cvtColor(cv2.imread(str(footage / "messi5.jpg")), cv2.COLOR_BGR2RGB)
    wide = cv2.resize(photo, (photo.shape[1] * 3, photo.shape[0] * 2))
    frames = np.stack([cv2.resize(wide[:528, i * speed:i * speed + 720], (160, 118), interpolation=cv2.INTER_AREA)
                       for i in range(99)])
    assert find_crop(frames, 528, 720, **ARGS).as_list() == [0, 528, 0, 720]


def test_aspect_box_is_centred_and_exact():
    from curator.tasks import CropBox

    box = aspect_box(CropBox(0, 576, 0, 768), 352, 640)
    assert (box.right - box.left, box.bottom - box.top) == (768, 422)
    assert box.top == (576 - 422) // 2
