"""Clip decoding: the early-stopping window equals the same window cut from a full decode."""
import numpy as np
import torch

from megatron_video.data.decode import (
    decode_at,
    decode_frames,
    decode_window,
    to_model_video,
    to_uint8_frames,
    window_indices,
)
from megatron_video.inference.video_io import write_mp4


def _clip(tmp_path) -> bytes:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (20, 16, 24, 3), dtype=np.uint8)
    return write_mp4(frames, tmp_path / "clip.mp4", fps=10).read_bytes()


def test_window_with_known_length_equals_full_decode(tmp_path):
    data = _clip(tmp_path)
    full = decode_frames(data)
    assert full.shape == (20, 16, 24, 3)
    for seed in range(5):
        fast = decode_window(data, 20, length=4, stride=3, generator=torch.Generator().manual_seed(seed))
        slow = decode_window(data, None, length=4, stride=3, generator=torch.Generator().manual_seed(seed))
        np.testing.assert_array_equal(fast, slow)
    # A clip shorter than the window repeats its last frame rather than failing.
    short = decode_window(data, 20, length=8, stride=4, generator=torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(short[-1], full[-1])


def test_selected_frames_equal_a_full_decode_and_past_the_end_repeat_the_last(tmp_path):
    data = _clip(tmp_path)
    full = decode_frames(data)
    index = np.array([0, 2, 2, 7, 19, 25, 31])
    np.testing.assert_array_equal(decode_at(data, index), full[np.minimum(index, 19)])
    np.testing.assert_array_equal(decode_at(data, np.arange(5)), full[:5])  # decoding stops after frame 4
    np.testing.assert_array_equal(decode_at(data, np.arange(1)), full[:1])
    # Metadata that promises more frames than the clip holds: the window's tail is its last frame.
    window = decode_window(data, 40, length=4, stride=10, generator=torch.Generator().manual_seed(3))
    expected = window_indices(40, 4, 10, torch.Generator().manual_seed(3))
    assert expected[-1] > 19
    np.testing.assert_array_equal(window, full[np.minimum(expected, 19)])


def test_model_video_round_trip_is_within_one_level():
    frames = np.random.default_rng(1).integers(0, 256, (3, 8, 10, 3), dtype=np.uint8)
    video = to_model_video(frames, 8, 10)
    assert video.shape == (3, 3, 8, 10) and -1 <= video.min() and video.max() <= 1
    assert np.abs(to_uint8_frames(video).astype(int) - frames.astype(int)).max() <= 1
