"""A partitioned run (one process per GPU, `part_index` of `part_count`): the parts together curate
every input exactly once, each into a complete output of its own that resumes alone, and the
loaders read all of them from the output root."""
import shutil

import pytest

from curator.layout import part_dir
from curator.run import curate
from megatron_video.data.catalog import load_catalog
from megatron_video.data.dataset import list_shards


@pytest.fixture(scope="module")
def three_videos(footage, tmp_path_factory):
    folder = tmp_path_factory.mktemp("three_videos")
    for name in ("Megamind.avi", "cup.mp4", "box.mp4"):
        shutil.copy(footage / name, folder / name)
    return folder


def test_parts_curate_every_input_once_and_the_loaders_read_them_all(three_videos, make_config, read_shards,
                                                                     tmp_path):
    whole = curate(make_config(three_videos, tmp_path / "whole"), progress=False)
    parts = [curate(make_config(three_videos, tmp_path / "parts", part_index=i, part_count=2), progress=False)
             for i in range(2)]
    # Sorted listing, every second input from the part's index: 2 inputs and 1.
    assert [sum(p.inputs_by_status.values()) for p in parts] == [2, 1]
    keys = [sorted(k for k, _, _ in read_shards(part_dir(tmp_path / "parts", i, 2))) for i in range(2)]
    whole_keys = sorted(k for k, _, _ in read_shards(tmp_path / "whole"))
    assert whole_keys and not set(keys[0]) & set(keys[1])
    assert sorted(keys[0] + keys[1]) == whole_keys
    assert len(list_shards(tmp_path / "parts")) == len(parts[0].shard_paths) + len(parts[1].shard_paths)
    assert sorted(load_catalog(tmp_path / "parts")["key"]) == whole_keys
    assert whole.clips_written == sum(p.clips_written for p in parts)
    # Each part resumes from its own ledger: a rerun finds its inputs finished.
    again = curate(make_config(three_videos, tmp_path / "parts", part_index=1, part_count=2), progress=False)
    assert again.inputs_skipped_as_finished == 1 and again.clips_written == 0
