"""Black bars and burned-in text bands (read by RapidOCR) are cropped; clean real footage is left whole."""
import av
import cv2
import numpy as np
import pytest

from curator.stages.crop import CropStage, find_crop
from curator.stages.resize import aspect_box
from curator.tasks import ClipTask, VideoMeta

ARGS = {"black_level": 24, "band_fraction": 0.25, "text_lines": []}


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


def megamind_clip(footage, draw, count=99, pad=(0, 0, 0, 0)) -> ClipTask:
    """A clip task of Megamind's first shot (fade-in included) with `draw(rgb, i)` applied
    at source resolution, padded with black bars (top, bottom, left, right), as the clip-length
    stage hands it to the crop stage: analysis frames 160 wide, and the frames kept at source size."""
    top, bottom, left, right = pad
    frames = []
    with av.open(str(footage / "Megamind.avi")) as container:
        for i, frame in enumerate(container.decode(video=0)):
            rgb = np.zeros((528 + top + bottom, 720 + left + right, 3), dtype=np.uint8)
            rgb[top:top + 528, left:left + 720] = frame.to_ndarray(format="rgb24")
            draw(rgb, i)
            frames.append(rgb)
            if len(frames) == count:
                break
    kept = np.stack(frames)
    h, w = kept.shape[1:3]
    small = np.stack([cv2.resize(f, (160, round(h * 160 / w)), interpolation=cv2.INTER_AREA) for f in kept])
    return ClipTask(source=str(footage / "Megamind.avi"), key="k", start_frame=0, end_frame=count, source_fps=24.0,
                    source_meta=VideoMeta(height=h, width=w, decoder="pyav"), analysis=small, source_frames=kept)


def test_burned_in_caption_is_removed(footage):
    """A white caption with a black outline, drawn at source resolution on Megamind's first shot."""
    caption_top = 500 - 33  # baseline 500, cap height ~29 px at scale 1.3, outline 4 px

    def caption(rgb, _):
        for color, thickness in (((0, 0, 0), 8), ((255, 255, 255), 2)):
            cv2.putText(rgb, "The quick brown fox jumps", (40, 500), cv2.FONT_HERSHEY_SIMPLEX, 1.3, color,
                        thickness, cv2.LINE_AA)

    task = CropStage().process(megamind_clip(footage, caption))[0]
    box = task.crop
    assert 0.75 * 528 <= box.bottom <= caption_top
    assert (box.top, box.left, box.right) == (0, 0, 720)
    assert any("quick brown" in line.text for line in task.text_lines[0])


def test_scrolling_ticker_is_removed(footage):
    """A news ticker on a band of its own, scrolling left 4 source pixels per frame."""
    headlines = "BREAKING NEWS markets rally as rates hold weather sunny sports 3-1 " * 3

    def ticker(rgb, i):
        cv2.rectangle(rgb, (0, 470), (720, 510), (20, 20, 120), -1)
        cv2.putText(rgb, headlines, (20 - 4 * i, 500), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2,
                    cv2.LINE_AA)

    box = CropStage().process(megamind_clip(footage, ticker))[0].crop
    assert 0.75 * 528 <= box.bottom <= 475
    assert (box.top, box.left, box.right) == (0, 0, 720)


def test_letterbox_and_a_text_block_are_cropped_together(footage):
    """Letterboxed Megamind (40-row bars) with two lines of OpenCV's imageTextN.png burned in just
    above the lower bar: the crop ends above the text; the text filter scores what remains."""
    from curator.stages.filter_text import TextFilterStage

    text = cv2.cvtColor(cv2.imread(str(footage / "imageTextN.png")), cv2.COLOR_BGR2RGB)[15:52]
    text_top = 40 + 528 - 12 - text.shape[0]

    def burn(rgb, _):
        rgb[text_top:text_top + text.shape[0], 100:100 + text.shape[1]] = text

    task = CropStage().process(megamind_clip(footage, burn, pad=(40, 40, 0, 0)))[0]
    box = task.crop
    assert 40 <= box.top <= 40 + 2 * 720 // 160  # the bars, to within an analysis row (4.5 source rows)
    assert 0.75 * 528 <= box.bottom <= text_top
    assert (box.left, box.right) == (0, 720)
    assert TextFilterStage().process(task)[0].extra["text_coverage"] == 0.0


def test_aspect_box_is_centred_and_exact():
    from curator.tasks import CropBox

    box = aspect_box(CropBox(0, 576, 0, 768), 352, 640)
    assert (box.right - box.left, box.bottom - box.top) == (768, 422)
    assert box.top == (576 - 422) // 2
