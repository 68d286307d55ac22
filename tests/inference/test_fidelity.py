"""The demo's fidelity check on shards cut from real footage: a sample that is one of the training
windows scores far higher against that caption's clips than a sample of noise does."""
import numpy as np

from megatron_video.config.run import DataConfig
from megatron_video.data.dataset import ClipDataset
from megatron_video.data.decode import to_uint8_frames
from megatron_video.demo.fidelity import psnr, sample_fidelity
from megatron_video.inference.video_io import write_mp4


def test_a_training_window_as_sample_is_recognised(shard_root, tmp_path):
    data = DataConfig(shards=str(shard_root), frames=4, height=32, width=56, num_workers=0, val_fraction=0.25)
    clip = next(iter(ClipDataset(data, "train", seed=0, repeat=False)))
    copy = write_mp4(to_uint8_frames(clip["video"]), tmp_path / "copy.mp4", fps=6)
    noise = write_mp4(np.random.default_rng(0).integers(0, 256, (4, 32, 56, 3), dtype=np.uint8),
                      tmp_path / "noise.mp4", fps=6)
    learned = sample_fidelity(copy, clip["caption"], data)
    unlearned = sample_fidelity(noise, clip["caption"], data)
    assert len(learned.own) >= 2 and not learned.others  # every clip here comes from Megamind
    assert max(learned.own) > 30 > max(unlearned.own) + 15
    other = sample_fidelity(copy, "a video clip from elsewhere", data)
    assert other.others == learned.own and not other.own
    assert psnr(np.zeros((1, 2, 2, 3), np.uint8), np.full((1, 2, 2, 3), 255, np.uint8)) == 0.0
    assert "its own caption's clips: best" in "\n".join(learned.lines())
