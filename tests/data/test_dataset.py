"""The training loader over WebDataset shards: shapes, splits, rank sharding, corrupt samples."""
import logging

import pytest
import torch

from megatron_video.config import ConfigError
from megatron_video.config.run import DataConfig
from megatron_video.data import dataset as dataset_module
from megatron_video.data.dataset import SKIPPED, ClipDataset, build_loader, list_shards


def _config(shard_root, **overrides) -> DataConfig:
    values = dict(shards=str(shard_root), frames=4, frame_stride=2, height=32, width=56, batch_size=3,
                  num_workers=0, shuffle_buffer=4, val_fraction=0.25)
    values.update(overrides)
    return DataConfig(**values)


def _keys(dataset) -> list[str]:
    return [sample["key"] for sample in dataset]


def test_batches_have_the_model_layout(shard_root):
    batch = next(iter(build_loader(_config(shard_root), "train", seed=0, repeat=True)))
    assert batch["video"].shape == (3, 3, 4, 32, 56)
    assert batch["video"].dtype == torch.float32
    assert -1.0 <= batch["video"].min() and batch["video"].max() <= 1.0
    assert batch["video"].std() > 0.05, "frames should carry real picture content"
    assert all(c == "a video clip from Megamind" for c in batch["caption"])


def test_train_and_validation_splits_are_disjoint_and_cover_every_clip(shard_root, caplog):
    cfg = _config(shard_root)
    with caplog.at_level(logging.WARNING):
        train = _keys(ClipDataset(cfg, "train", seed=0, repeat=False))
        val = _keys(ClipDataset(cfg, "val", seed=0, repeat=False))
    assert set(train).isdisjoint(val)
    assert len(train) == len(set(train)) and len(val) == len(set(val))
    assert sorted(train + val) == sorted(f"megamind_{12 * i:06d}" for i in range(8))
    assert val, "a 25% validation split of 8 clips should not be empty for these keys"
    # The corrupt sample was reported and skipped, and the run went on.
    assert "broken_000000" in caplog.text


def test_epochs_reshuffle_but_repeat_every_clip(shard_root):
    dataset = ClipDataset(_config(shard_root, val_fraction=0.0), "train", seed=3, repeat=True)
    stream = iter(dataset)
    first, second = [next(stream)["key"] for _ in range(8)], [next(stream)["key"] for _ in range(8)]
    assert sorted(first) == sorted(second)
    assert first != second


def test_data_parallel_ranks_read_disjoint_shards(shard_root, monkeypatch):
    seen = []
    for rank in range(2):
        monkeypatch.setattr(dataset_module, "data_parallel_position", lambda r=rank: (r, 2))
        seen.append(set(_keys(ClipDataset(_config(shard_root, val_fraction=0.0), "train", 0, False))))
    assert seen[0] and seen[1] and seen[0].isdisjoint(seen[1])
    assert len(seen[0] | seen[1]) == 8


def test_missing_or_empty_shard_dirs_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="data.shards"):
        list_shards(tmp_path / "absent")
    with pytest.raises(ConfigError, match="no .tar shards"):
        list_shards(tmp_path)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_resumed_loader_continues_exactly_where_the_first_stopped_and_counts_the_corrupt_clip(shard_root, workers):
    cfg = _config(shard_root, val_fraction=0.0, num_workers=workers, batch_size=2, shuffle_buffer=3)
    straight = [b for _, b in zip(range(8), build_loader(cfg, "train", seed=5, repeat=True))]
    resumed = [b for _, b in zip(range(5), build_loader(cfg, "train", seed=5, repeat=True, skip_batches=3))]
    for expected, got in zip(straight[3:], resumed, strict=True):
        assert expected["key"] == got["key"]
        torch.testing.assert_close(expected["video"], got["video"], rtol=0, atol=0)
    # 8 batches of 2 are two passes over the 8 good clips, so two over the corrupt one: counted once
    # in each, in the batch that follows its reading, and the resumed loader counts those after its start.
    assert sum(b[SKIPPED] for b in straight) == 2 and all(b[SKIPPED] in (0, 1) for b in straight)
    assert [b[SKIPPED] for b in resumed] == [b[SKIPPED] for b in straight[3:]]
