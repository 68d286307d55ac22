"""The demo's fidelity check: exact PSNR figures and own/other bookkeeping on constructed videos, and
on shards cut from real footage a sample that is one of the training windows scores far higher
against that caption's clips than a sample of noise does."""
import math

import numpy as np

from megatron_video.config.run import DataConfig
from megatron_video.data.dataset import ClipDataset
from megatron_video.data.decode import to_uint8_frames
from megatron_video.demo.fidelity import fidelity_table, frames_fidelity, psnr, sample_fidelity, training_windows
from megatron_video.inference.video_io import write_mp4


def constant(value: int, frames: int = 4) -> np.ndarray:
    return np.full((frames, 8, 12, 3), value, np.uint8)


def test_psnr_and_margin_on_constructed_videos():
    # PSNR = 10 log10(255^2 / MSE): a constant error of 255 is 0 dB, of 16 is 20 log10(255/16) dB.
    assert psnr(constant(0), constant(255)) == 0.0
    assert math.isclose(psnr(constant(100), constant(116)), 20 * math.log10(255 / 16))
    assert psnr(constant(7), constant(7)) == math.inf
    sample = constant(100)
    windows = [("cat", constant(110)), ("cat", constant(140)), ("dog", constant(200)), ("dog", constant(100, 6)),
               ("dog", np.zeros((4, 4, 6, 3), np.uint8))]  # a window of another size is skipped
    result = frames_fidelity(sample, "cat", windows)
    np.testing.assert_allclose(result.own, [20 * math.log10(255 / 10), 20 * math.log10(255 / 40)])
    # The 6-frame window is compared on the 4 frames it shares with the sample: identical.
    np.testing.assert_allclose(result.others, [20 * math.log10(255 / 100), math.inf])
    np.testing.assert_array_equal(result.closest_own, constant(110))
    finite = frames_fidelity(sample, "cat", windows[:3])
    expected = (20 * math.log10(255 / 10) + 20 * math.log10(255 / 40)) / 2 - 20 * math.log10(255 / 100)
    assert math.isclose(finite.margin, expected) and finite.margin > 0
    assert frames_fidelity(constant(200), "cat", windows[:3]).margin < 0  # closer to the dog's clip
    assert math.isnan(frames_fidelity(sample, "bird", windows[:1]).margin)  # no own clip: no margin
    table = "\n".join(fidelity_table([finite]))
    assert f"| cat | {max(finite.own):.2f} / {np.mean(finite.own):.2f} (2) |" in table
    assert f"| {finite.margin:+.2f} |" in table


def test_a_training_window_as_sample_is_recognised(shard_root, tmp_path):
    data = DataConfig(shards=str(shard_root), frames=4, height=32, width=56, num_workers=0, val_fraction=0.25)
    clip = next(iter(ClipDataset(data, "train", seed=0, repeat=False)))
    copy = write_mp4(to_uint8_frames(clip["video"]), tmp_path / "copy.mp4", fps=6)
    noise = write_mp4(np.random.default_rng(0).integers(0, 256, (4, 32, 56, 3), dtype=np.uint8),
                      tmp_path / "noise.mp4", fps=6)
    windows = training_windows(data)
    learned = sample_fidelity(copy, clip["caption"], windows)
    unlearned = sample_fidelity(noise, clip["caption"], windows)
    assert len(learned.own) >= 2 and not learned.others  # every clip here comes from Megamind
    assert max(learned.own) > 30 > max(unlearned.own) + 15
    other = sample_fidelity(copy, "a video clip from elsewhere", windows)
    assert other.others == learned.own and not other.own
