"""The catalog on a real curated output: feature sets joined by key change what a run reads without
touching a shard; versions; captions from a feature set; joins that would be wrong are refused."""
import hashlib
import logging
import shutil

import pandas as pd
import pytest

from megatron_video.config import ConfigError
from megatron_video.config.run import DataConfig
from megatron_video.data.catalog import add_feature_set, feature_set_files, load_catalog
from megatron_video.data.dataset import ClipDataset
from megatron_video.data.versions import load_version, save_version


@pytest.fixture
def curated(demo_run, tmp_path):
    """A private copy of the demo curation's output (tests here add feature sets to it)."""
    _, output = demo_run
    root = tmp_path / "curated"
    shutil.copytree(output, root)
    return root


# The curation's own feature sets: the filters' scores and verdict (curator/filters/verdict.py).
FILTER_SETS = ["filter_scores", "filter_verdict"]


def _score(key: str) -> float:
    """A stand-in aesthetic score: fixed per key, spread over [0, 1)."""
    # md5, not the validation split's sha1: a score that predicted the split would hide it.
    return int(hashlib.md5(key.encode()).hexdigest()[:6], 16) / 0xFFFFFF


def _loader_keys(root, split="train", **data) -> list[str]:
    cfg = DataConfig(shards=str(root), frames=1, height=16, width=16, batch_size=1, num_workers=0,
                     val_fraction=data.pop("val_fraction", 0.0), **data)
    return [sample["key"] for sample in ClipDataset(cfg, split, seed=0, repeat=False)]


def _shard_files(root) -> dict[str, tuple[int, str]]:
    return {p.name: (p.stat().st_mtime_ns, hashlib.sha1(p.read_bytes()).hexdigest())
            for p in sorted([*(root / "shards").glob("*.tar"), *(root / "catalog").glob("*.parquet")])}


def test_a_feature_set_changes_a_filter_without_touching_the_shards(curated):
    keys = list(load_catalog(curated)["key"])
    assert len(keys) >= 10, "the demo curation should yield enough clips to filter"
    before = _shard_files(curated)
    with pytest.raises(ConfigError) as err:
        _loader_keys(curated, filter="aesthetic_score > 0.5")
    assert err.value.key == "data.filter" and "unknown column 'aesthetic_score'" in str(err.value)

    scores = pd.DataFrame({"key": keys, "aesthetic_score": [_score(k) for k in keys]})
    path = add_feature_set(curated, "aesthetic", scores)
    assert path == curated / "catalog" / "features" / "aesthetic.parquet"

    expected = sorted(k for k in keys if _score(k) > 0.5)
    assert 0 < len(expected) < len(keys)
    assert sorted(_loader_keys(curated, filter="aesthetic_score > 0.5")) == expected
    assert sorted(load_catalog(curated, "aesthetic_score > 0.5")["key"]) == expected
    assert _shard_files(curated) == before, "adding a feature set must not rewrite shards or the shard index"


def test_captions_from_a_feature_set_reach_the_samples(curated):
    keys = sorted(load_catalog(curated)["key"])[:4]
    add_feature_set(curated, "captions", pd.DataFrame({"key": keys, "caption": [f"clip number {i}" for i in range(4)]}))
    cfg = DataConfig(shards=str(curated), frames=1, height=16, width=16, num_workers=0, val_fraction=0.0,
                     filter="caption contains 'clip number'")
    captions = {s["key"]: s["caption"] for s in ClipDataset(cfg, "train", seed=0, repeat=False)}
    assert captions == {k: f"clip number {i}" for i, k in enumerate(keys)}


def test_joins_that_would_be_wrong_are_refused(curated):
    keys = list(load_catalog(curated)["key"])
    add_feature_set(curated, "aesthetic", pd.DataFrame({"key": keys, "aesthetic_score": 0.5}))
    refusals = [
        ("motion", pd.DataFrame({"clip": keys, "motion": 1.0}), "has no 'key' column"),
        ("motion", pd.DataFrame({"key": keys[:1] * 2, "motion": 1.0}), "more than once"),
        ("motion", pd.DataFrame({"key": keys, "duration_s": 1.0}),
         "column 'duration_s' of feature set 'motion' is already a column of the shard index"),
        ("motion", pd.DataFrame({"key": keys, "aesthetic_score": 1.0}), "already a column of feature set 'aesthetic'"),
        ("motion", pd.DataFrame({"key": ["elsewhere_0"], "motion": 1.0}), "none of the 1 keys"),
        ("bad name", pd.DataFrame({"key": keys, "motion": 1.0}), "is not a feature set name"),
        ("aesthetic", pd.DataFrame({"key": keys, "aesthetic_score": 0.9}), "catalog.replace=true"),
    ]
    for name, frame, message in refusals:
        with pytest.raises(ConfigError, match=message):
            add_feature_set(curated, name, frame)
    assert list(feature_set_files(curated)) == ["aesthetic", *FILTER_SETS]
    # A producer that wrote a colliding file directly is caught when the catalog is read.
    frame = pd.DataFrame({"key": keys, "duration_s": 1.0})
    frame.to_parquet(curated / "catalog" / "features" / "rogue.parquet")
    with pytest.raises(ConfigError, match="column 'duration_s' of feature set 'rogue'"):
        load_catalog(curated)


def test_a_dataset_version_is_what_a_recipe_names(curated, caplog):
    catalog = load_catalog(curated)
    add_feature_set(curated, "aesthetic", pd.DataFrame({"key": catalog["key"],
                                                        "aesthetic_score": [_score(k) for k in catalog["key"]]}))
    version = save_version(curated, "long", "duration_s >= 4", None, "clips of 4 s or more")
    assert load_version(curated, "long").features == ["aesthetic", *FILTER_SETS]
    long_keys = sorted(catalog.loc[catalog["duration_s"] >= 4, "key"])
    assert version.clips == len(long_keys) and 0 < len(long_keys) < len(catalog)
    assert sorted(_loader_keys(curated, version="long")) == long_keys
    # data.filter narrows the version further; both splits together are the whole selection.
    narrowed = sorted(k for k in long_keys if _score(k) > 0.3)
    train = _loader_keys(curated, version="long", filter="aesthetic_score > 0.3", val_fraction=0.3)
    val = _loader_keys(curated, "val", version="long", filter="aesthetic_score > 0.3", val_fraction=0.3)
    assert sorted(train + val) == narrowed and set(train).isdisjoint(val) and val

    with pytest.raises(ConfigError) as err:
        _loader_keys(curated, version="lnog")
    assert err.value.key == "data.version" and "versions: long" in str(err.value)
    with pytest.raises(ConfigError, match="selects no clip"):
        save_version(curated, "empty", "duration_s > 1000", None)
    with pytest.raises(ConfigError) as err:
        save_version(curated, "typo", "aesthetic_scor > 0.5", None)
    assert err.value.key == "catalog.filter" and "aesthetic_scor" in str(err.value)

    # Replacing a feature set the version reads changes its clips: the run says so.
    add_feature_set(curated, "aesthetic", pd.DataFrame({"key": catalog["key"], "aesthetic_score": 1.0}),
                    replace=True)
    save_version(curated, "good", "aesthetic_score > 0.5", ["aesthetic"])
    add_feature_set(curated, "aesthetic", pd.DataFrame({"key": catalog["key"][:3], "aesthetic_score": 1.0}),
                    replace=True)
    with caplog.at_level(logging.WARNING):
        assert len(_loader_keys(curated, version="good")) == 3
    assert "dataset version 'good' selected" in caplog.text


def test_filters_need_a_catalog_and_must_select_something(shard_root, curated):
    with pytest.raises(ConfigError, match="needs a Parquet catalog"):
        _loader_keys(shard_root, filter="duration_s > 1")
    with pytest.raises(ConfigError) as err:
        _loader_keys(curated, filter="duration_s > 1000")
    assert err.value.key == "data.filter" and "selects none" in str(err.value)


def test_a_curation_rerun_keeps_the_feature_sets(curated, footage, make_config):
    from curator.run import curate

    keys = list(load_catalog(curated)["key"])
    add_feature_set(curated, "aesthetic", pd.DataFrame({"key": keys, "aesthetic_score": 0.5}))
    summary = curate(make_config(footage, curated), progress=False)
    assert summary.clips_written == 0
    assert list(feature_set_files(curated)) == ["aesthetic", *FILTER_SETS]
    assert len(load_catalog(curated, "aesthetic_score == 0.5")) == len(keys)


def test_feature_sets_written_in_parts_are_read_whole(tmp_path):
    """A partitioned curation (one output per part) scored by one process per part: the parts'
    shard indexes and each feature set's files, in either layout, join into one table."""
    root = tmp_path / "parts"
    for part in range(2):
        folder = root / f"part-{part:05d}-of-00002"
        (folder / "catalog" / "features" / "motion").mkdir(parents=True)
        keys = [f"clip{part}{i}" for i in range(3)]
        pd.DataFrame({"key": keys, "shard": "shard-000000.tar", "duration_s": [2.0, 4.0, 6.0]}).to_parquet(
            folder / "catalog" / "shard-000000.parquet")
        pd.DataFrame({"key": keys, "aesthetic_score": [0.1, 0.5, 0.9]}).to_parquet(
            folder / "catalog" / "features" / "aesthetic.parquet")
        pd.DataFrame({"key": keys[:2], "motion_score": [1.0, 2.0]}).to_parquet(
            folder / "catalog" / "features" / "motion" / f"{part}.parquet")
    catalog = load_catalog(root)
    assert len(catalog) == 6 and list(feature_set_files(root)) == ["aesthetic", "motion"]
    assert sorted(load_catalog(root, "aesthetic_score > 0.3 and motion_score > 1")["key"]) == ["clip01", "clip11"]
    assert catalog.set_index("key").loc["clip12", "shard_path"] == str(root / "part-00001-of-00002" / "shards" /
                                                                      "shard-000000.tar")
