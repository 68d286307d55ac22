"""Inputs from an fsspec URL (here the in-memory filesystem, standing in for s3://) curate like local files."""
import fsspec

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
