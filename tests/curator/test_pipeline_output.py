"""The demo recipe on all five sample videos: clip rules, output layout, readers, reruns."""
import json

import webdataset as wds

from curator.ledger import Ledger
from curator.run import curate
from megatron_video.data.catalog import shard_index


def test_every_input_is_done_and_clips_were_written(demo_run):
    summary, output = demo_run
    assert summary.inputs_by_status == {"done": 5}
    assert summary.clips_written >= 20
    assert summary.wall_seconds > 0
    assert {"probe", "decode", "shots", "resize", "encode"} <= set(summary.metrics.stages)
    assert all(p.startswith(str(output / "shards" / "shard-")) for p in summary.shard_paths)


def test_clips_meet_resolution_fps_and_length_rules(demo_run, make_config, read_shards, decode):
    summary, output = demo_run
    cfg = make_config(output, output)
    samples = read_shards(output)
    assert len(samples) == summary.clips_written
    for key, meta, mp4 in samples:
        frames, fps, height, width = decode(mp4)
        assert (height, width) == (cfg.height, cfg.width), key
        assert abs(fps - cfg.fps) < 1e-3, key
        assert len(frames) == meta["num_frames"] >= cfg.min_frames, key
        assert cfg.min_seconds - 1e-6 <= len(frames) / fps <= cfg.max_seconds + 1e-6, key
        assert meta["key"] == key and meta["height"] == cfg.height and meta["width"] == cfg.width
        assert meta["end_frame"] > meta["start_frame"]
        assert float(frames[len(frames) // 2].mean()) > 5.0, f"{key} decodes to black frames"


def test_keys_are_unique_and_catalog_matches_shards(demo_run, read_shards):
    _, output = demo_run
    keys = [key for key, _, _ in read_shards(output)]
    assert len(keys) == len(set(keys))
    catalog = shard_index(output)  # the shard index alone: catalog/features/ holds the filters' sets
    assert sorted(catalog["key"]) == sorted(keys)
    for column in ("key", "shard", "source", "start_s", "duration_s", "num_frames", "fps", "height", "width"):
        assert column in catalog.columns
    assert set(catalog["shard"]) == {p.name for p in (output / "shards").glob("*.tar")}


def test_ledger_has_a_row_per_input_with_timings(demo_run):
    summary, _ = demo_run
    rows = Ledger(summary.ledger_path).inputs()
    assert len(rows) == 5
    for row in rows:
        assert row["status"] == "done" and row["clips"] >= 1 and row["codec"]
        assert json.loads(row["timings"])["decode"] > 0


def test_shards_read_back_with_webdataset(demo_run):
    summary, output = demo_run
    urls = [str(p) for p in sorted((output / "shards").glob("*.tar"))]
    dataset = wds.WebDataset(urls, shardshuffle=False).decode()
    seen = 0
    for sample in dataset:
        assert isinstance(sample["mp4"], bytes) and sample["mp4"][4:8] == b"ftyp"
        assert sample["json"]["key"] == sample["__key__"]
        seen += 1
    assert seen == summary.clips_written


def test_rerun_skips_finished_inputs(demo_run, make_config, footage):
    summary, output = demo_run
    again = curate(make_config(footage, output), progress=False)
    assert again.inputs_skipped_as_finished == 5
    assert again.clips_written == 0
    assert sorted(again.shard_paths) == sorted(summary.shard_paths)
