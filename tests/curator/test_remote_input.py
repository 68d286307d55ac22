"""Inputs from an fsspec URL (here the in-memory filesystem, standing in for s3://) curate like local files."""
import fsspec
import pytest

from curator.ledger import Ledger
from curator.run import curate


def test_fsspec_bucket_input(footage, make_config, read_shards, tmp_path):
    fs = fsspec.filesystem("memory")
    fs.pipe("/bucket/raw/cup.mp4", (footage / "cup.mp4").read_bytes())
    fs.pipe("/bucket/raw/notes.txt", b"not a video")
    summary = curate(make_config("memory://bucket/raw", tmp_path / "out"), progress=False)
    [row] = Ledger(summary.ledger_path).inputs()
    # fsspec spells memory URLs with three slashes (memory:///bucket/...), s3 ones with two.
    assert row["source"].startswith("memory://") and row["source"].endswith("/bucket/raw/cup.mp4")
    assert row["status"] == "done"
    samples = read_shards(tmp_path / "out")
    assert len(samples) == summary.clips_written >= 1
    assert all(meta["source"] == row["source"] for _, meta, _ in samples)


def test_keys_do_not_depend_on_where_the_input_lives(footage, make_config, read_shards, tmp_path):
    """Clip keys (and so the train/validation split) hash the path under the input, not the input's place."""
    fs = fsspec.filesystem("memory")
    fs.pipe("/moved/raw/sub/cup.mp4", (footage / "cup.mp4").read_bytes())
    local = tmp_path / "checkout" / "raw" / "sub"
    local.mkdir(parents=True)
    (local / "cup.mp4").write_bytes((footage / "cup.mp4").read_bytes())
    curate(make_config("memory://moved/raw", tmp_path / "a"), progress=False)
    curate(make_config(str(local.parent), tmp_path / "b"), progress=False)
    keys = [sorted(meta["key"] for _, meta, _ in read_shards(tmp_path / side)) for side in ("a", "b")]
    assert keys[0] == keys[1] and keys[0]


def test_a_path_under_the_input_and_a_single_file_input():
    from curator.storage import relative_to_input

    assert relative_to_input("/data/raw/sub/cup.mp4", "/data/raw") == "sub/cup.mp4"
    assert relative_to_input("/data/raw/sub/cup.mp4", "/data/raw/") == "sub/cup.mp4"
    assert relative_to_input("memory://bucket/raw/cup.mp4", "memory://bucket/raw") == "cup.mp4"
    # A file given as the input is named by itself, as it would be under its directory.
    assert relative_to_input("/data/raw/cup.mp4", "/data/raw/cup.mp4") == "cup.mp4"
    with pytest.raises(ValueError, match="not under the input"):
        relative_to_input("/data/other/cup.mp4", "/data/raw")
    with pytest.raises(ValueError, match="not under the input"):
        relative_to_input("/data/raw2/cup.mp4", "/data/raw")
