"""Colour, stillness and perceptual-hash filters on real footage with known answers."""
import av
import cv2
import numpy as np
import pytest

from curator.filters.colour import colour_scores, colourfulness, hue_spread
from curator.filters.phash import clip_hashes, hamming, near_duplicates, sift_similarity
from curator.filters.stillness import changed_pixels, sample_stride, still_runs, stillness_scores

# Megamind's shots (hard cuts at 99, 155 and 201; ENVIRONMENT.md).
SHOTS = [(0, 99), (99, 155), (155, 201), (201, 270)]
MIN_COLOURFULNESS, MIN_HUE_SPREAD = 10.0, 8.0  # FilterConfig's defaults


@pytest.fixture(scope="module")
def megamind(footage) -> np.ndarray:
    with av.open(str(footage / "Megamind.avi")) as container:
        return np.stack([f.to_ndarray(format="rgb24", width=160, height=118) for f in container.decode(video=0)])


def tinted(frames: np.ndarray, colour) -> np.ndarray:
    """The frames' luma carried by one colour (sepia, night-vision green)."""
    luma = frames.astype(np.float32).mean(axis=3, keepdims=True)
    return np.clip(luma * np.asarray(colour, dtype=np.float32), 0, 255).astype(np.uint8)


def test_tinted_and_grey_frames_are_found_among_colour_ones(megamind):
    frames = megamind[100:200].copy()
    frames[20:40] = tinted(frames[20:40], (1.28, 0.89, 0.52))  # sepia
    frames[50:60] = tinted(frames[50:60], (0.3, 1.2, 0.35))  # night-vision green
    frames[70:85] = frames[70:85].mean(axis=3, keepdims=True).astype(np.uint8)  # greyscale
    monochrome = colourfulness(frames) < MIN_COLOURFULNESS
    tint = hue_spread(frames) < MIN_HUE_SPREAD
    assert np.flatnonzero(monochrome).tolist() == list(range(70, 85))
    assert np.flatnonzero(tint & ~monochrome).tolist() == list(range(20, 40)) + list(range(50, 60))


@pytest.mark.parametrize("name", ["Megamind.avi", "vtest.avi", "box.mp4", "cup.mp4", "music_video.mp4"])
def test_real_footage_passes_the_colour_filter(footage, name):
    with av.open(str(footage / name)) as container:
        frames = np.stack([f.to_ndarray(format="rgb24", width=96, height=64)
                           for _, f in zip(range(120), container.decode(video=0))])
    scores = colour_scores(frames)
    assert scores["colourfulness"] >= MIN_COLOURFULNESS and scores["hue_spread"] >= MIN_HUE_SPREAD, scores


def test_a_frozen_segment_is_found_and_scored(megamind):
    """Megamind's second shot with its frame 130 held for 2 s in the middle (24 fps)."""
    shot = megamind[99:155]
    frozen = np.concatenate([shot[:31], np.repeat(shot[31:32], 48, axis=0), shot[32:]])
    stride = sample_stride(24.0)
    runs = still_runs(changed_pixels(frozen[::stride]), min_frames=4)
    assert len(runs) == 1
    start, end = (x * stride for x in runs[0])
    assert 31 - stride <= start <= 31 + stride and 31 + 48 - stride <= end <= 31 + 48 + stride
    moving = stillness_scores(shot, 24.0)
    held = stillness_scores(frozen, 24.0)
    assert moving["still_fraction"] == 0.0 and abs(held["still_fraction"] - 48 / len(frozen)) < 0.1


def test_a_slideshow_is_still_between_jumps(megamind):
    """Four stills (one from each shot), each held 2 s: still except at the three slide changes."""
    slides = np.concatenate([np.repeat(megamind[a + 10:a + 11], 48, axis=0) for a, _ in SHOTS])
    scores = stillness_scores(slides, 24.0)
    assert scores["jumps"] == 3 and scores["still_fraction"] > 0.9
    assert stillness_scores(megamind[99:155], 24.0)["jumps"] == 0


def test_near_duplicate_clips_are_found_and_distinct_shots_kept(megamind):
    shots = [megamind[a:b] for a, b in SHOTS]
    # A re-encode of shot 2: brighter, blurred by a down-and-up scale; and a shot trimmed by 3 frames.
    copy = np.stack([cv2.resize(cv2.resize(f, (96, 70), interpolation=cv2.INTER_AREA), (160, 118))
                     for f in np.clip(shots[1].astype(np.float32) * 1.1 + 5, 0, 255).astype(np.uint8)])
    keys = ["a-shot0", "b-shot1", "c-shot2", "d-shot3", "e-copy1", "f-trim3"]
    clips = [*shots, copy, shots[3][3:]]
    hashes = np.array([clip_hashes(c) for c in clips], dtype=np.uint64)
    assert near_duplicates(keys, hashes, max_distance=8) == {"e-copy1": "b-shot1", "f-trim3": "d-shot3"}
    assert hamming(hashes[0], hashes[1]).min() > 8  # distinct shots are far apart
    assert sift_similarity(shots[1][20], copy[20]) > 0.3
    assert sift_similarity(shots[1][20], shots[3][20]) < 0.1
