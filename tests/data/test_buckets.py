"""Buckets and packing of the training data: deterministic, resumable, dealt by data-parallel rank.

Plans are checked on synthetic keys (every batch from one bucket, every row within its token
budget, each key at most once per epoch, the same batches for the same seed whatever the catalog's
row order, disjoint equal shares per DP rank, a resumed position continuing the same sequence across
epochs); the loader on real clips cut from footage with a catalog: images (1 frame) and clips of two
durations land in their buckets, a second loader and a resumed one give the same batches, and a
packed row's samples keep their own shapes.
"""
import json
import math
import shutil

import pandas as pd
import pytest
import torch
import webdataset as wds

from megatron_video.config import ConfigError
from megatron_video.config.run import DataConfig
from megatron_video.data.bucketed_dataset import BucketedClipDataset, crop_to_aspect
from megatron_video.data.buckets import BatchPlan, Bucket, assign_bucket, bucket_batches, parse_buckets
from megatron_video.data.decode import decode_frames
from megatron_video.data.packing import check_packing, token_packs
from megatron_video.inference.video_io import write_mp4

BUCKETS = parse_buckets([[1, 32, 32], "4x32x56", [8, 32, 56]])
IMAGE, SHORT, LONG = BUCKETS


def test_parse_and_assign_buckets():
    assert BUCKETS == (Bucket(1, 32, 32), Bucket(4, 32, 56), Bucket(8, 32, 56))
    for bad in ([[4, 32]], ["4x32xq"], [[0, 32, 32]], [[1, 8, 8], "1x8x8"]):
        with pytest.raises(ConfigError, match="data.buckets"):
            parse_buckets(bad)
    assert assign_bucket(1, 64, 64, BUCKETS) == IMAGE  # an image fits 1-frame buckets only
    assert assign_bucket(1, 64, 112, BUCKETS) == IMAGE
    assert assign_bucket(6, 64, 112, BUCKETS) == SHORT  # too short for 8 frames
    assert assign_bucket(12, 64, 112, BUCKETS) == LONG  # same aspect: the longest
    assert assign_bucket(12, 64, 64, BUCKETS) == IMAGE  # nearest aspect first
    assert assign_bucket(3, 64, 112, (SHORT, LONG)) is None


def synthetic_items(count=60):
    return [(f"clip{i:03d}", BUCKETS[i % 3]) for i in range(count)]


def tokens(bucket):
    return 16 + bucket.frames * bucket.height * bucket.width // 64


def plans(batcher, dp_size=1, seed=5, items=None):
    items = synthetic_items() if items is None else items
    return [BatchPlan(items, batcher, seed, rank, dp_size) for rank in range(dp_size)]


@pytest.mark.parametrize("mode", ["buckets", "packing"])
def test_plan_is_deterministic_sharded_and_resumable(mode):
    batcher = ((lambda items, g: bucket_batches(items, g, 4)) if mode == "buckets"
               else (lambda items, g: token_packs(items, g, tokens, 400)))
    bucket_of = dict(synthetic_items())
    (single,) = plans(batcher)
    epoch0, epoch1 = single.epoch(0), single.epoch(1)
    assert epoch0 != epoch1  # reshuffled each epoch
    for batches in (epoch0, epoch1):
        keys = [k for batch in batches for k in batch]
        assert len(keys) == len(set(keys))
        for batch in batches:
            if mode == "buckets":
                assert len(batch) == 4 and len({bucket_of[k] for k in batch}) == 1
            else:
                assert sum(tokens(bucket_of[k]) for k in batch) <= 400
    if mode == "packing":
        assert len({bucket_of[k] for batch in epoch0 for k in batch}) == 3
        assert sorted(k for batch in epoch0 for k in batch) == sorted(bucket_of)  # no sample left out
    # The same plan from a reordered catalog and another seed's differs.
    (reordered,) = plans(batcher, items=synthetic_items()[::-1])
    assert reordered.epoch(0) == epoch0
    assert plans(batcher, seed=6)[0].epoch(0) != epoch0
    # DP ranks: disjoint, equal shares of the same epoch.
    ranks = plans(batcher, dp_size=3)
    shares = [rank.epoch(0) for rank in ranks]
    assert len({len(share) for share in shares}) == 1
    dealt = [tuple(b) for share in shares for b in share]
    assert len(dealt) == len(set(dealt)) and len(dealt) == len(epoch0) - len(epoch0) % 3
    assert set(dealt) <= {tuple(b) for b in epoch0}
    # Resuming at any position, across the epoch boundary, continues the same sequence.
    straight = [b for _, b in zip(range(3 * len(epoch0)), single.batches(0))]
    for start in (1, len(epoch0) - 1, len(epoch0) + 2):
        resumed = [b for _, b in zip(range(5), plans(batcher)[0].batches(start))]
        assert [keys for _, keys in resumed] == [keys for _, keys in straight[start:start + 5]]


def test_packing_budget_and_layout_refusals():
    with pytest.raises(ConfigError, match="data.pack_tokens"):
        token_packs(synthetic_items(), torch.Generator().manual_seed(0), tokens, 100)
    with pytest.raises(ConfigError, match="parallel.context_mode"):
        check_packing("ring", "segments", "cuda")
    with pytest.raises(ConfigError, match="parallel.context_mode"):
        check_packing("usp", "segments", "cuda")
    with pytest.raises(ConfigError, match="model.packed_attention"):
        check_packing("none", "flex", "cpu")
    check_packing("ulysses", "segments", "cpu")
    check_packing("none", "flex", "cuda")


def test_crop_keeps_the_bucket_aspect():
    frames = torch.zeros(2, 64, 112, 3, dtype=torch.uint8).numpy()
    assert crop_to_aspect(frames, IMAGE).shape == (2, 64, 64, 3)
    assert crop_to_aspect(frames, LONG).shape == (2, 64, 112, 3)
    assert crop_to_aspect(frames[:, :, :64], SHORT).shape == (2, 37, 64, 3)


# -- the loader on real clips ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def catalogued(shard_root, tmp_path_factory):
    """shard_root's clips (12 frames, 64x112; those of its second shard catalogued as 6 frames
    long, one of them broken) plus three 64x64 images (1-frame clips) in a third shard, with the
    Parquet catalog curation writes."""
    root = tmp_path_factory.mktemp("bucketed")
    shutil.copytree(shard_root / "shards", root / "shards")
    rows = []
    for path in sorted((root / "shards").glob("*.tar")):
        for sample in wds.WebDataset(str(path), shardshuffle=False, empty_check=False):
            rows.append({"key": sample["__key__"], "shard": path.name, "height": 64, "width": 112,
                         "num_frames": 12 if path.name.endswith("000000.tar") else 6})
    first = next(iter(wds.WebDataset(str(root / "shards" / "shard-000000.tar"), shardshuffle=False)))
    frame = decode_frames(first["mp4"])[:1]
    with wds.TarWriter(str(root / "shards" / "shard-000002.tar")) as sink:
        for index in range(3):
            key = f"image_{index:06d}"
            picture = frame[:, :, 16 * index:16 * index + 64]
            mp4 = write_mp4(picture, root / f"{key}.mp4", fps=12).read_bytes()
            sink.write({"__key__": key, "mp4": mp4, "json": json.dumps({"key": key, "caption": "a still"}).encode()})
            rows.append({"key": key, "shard": "shard-000002.tar", "num_frames": 1, "height": 64, "width": 64})
    (root / "catalog").mkdir()
    pd.DataFrame(rows).to_parquet(root / "catalog" / "shard-000000.parquet")
    return root


def data_config(root, **kw):
    return DataConfig(**{**dict(shards=str(root), buckets=[list(b.__dict__.values()) for b in BUCKETS],
                                batch_size=2, num_workers=0, val_fraction=0.0), **kw})


def take(dataset, count):
    return [batch for _, batch in zip(range(count), dataset)]


def test_bucketed_loader_is_deterministic_and_resumes(catalogued):
    cfg = data_config(catalogued)
    dataset = BucketedClipDataset(cfg, "train", seed=3)
    batches = take(dataset, 12)  # over two epochs
    planned = [keys for _, (_, keys) in zip(range(12), dataset.plan.batches(0, True))]
    assert [b["skipped"] for b in batches] == [int("broken_000000" in keys) for keys in planned]
    assert sum(b["skipped"] for b in batches) >= 2  # counted in every epoch that plans it
    shapes = set()
    for batch in batches:
        frames, height, width = batch["video"].shape[2:]
        shapes.add((frames, height, width))
        assert batch["video"].shape[:2] == (len(batch["key"]), 3)
        assert batch["video"].abs().max() <= 1.0
        for key in batch["key"]:
            expected = IMAGE if key.startswith("image") else LONG if key < "megamind_000048" else SHORT
            assert (frames, height, width) == (expected.frames, expected.height, expected.width), key
        assert "broken_000000" not in batch["key"]  # undecodable: left out of its batch, logged, counted
    assert shapes == {(1, 32, 32), (4, 32, 56), (8, 32, 56)}
    again = take(BucketedClipDataset(cfg, "train", seed=3), 12)
    resumed = take(BucketedClipDataset(cfg, "train", seed=3, skip_batches=7), 5)
    for mine, theirs in zip(again + resumed, batches + batches[7:]):
        assert mine["key"] == theirs["key"] and mine["skipped"] == theirs["skipped"]
        torch.testing.assert_close(mine["video"], theirs["video"], atol=0, rtol=0)


def test_packed_loader_rows_keep_each_sample_shape(catalogued):
    cfg = data_config(catalogued, packing=True, pack_tokens=300)
    budget_tokens = {IMAGE: 16 + 16, SHORT: 16 + 112, LONG: 16 + 224}  # text + pixel-codec tokens

    def tokens_of(bucket):
        return budget_tokens[bucket]

    dataset = BucketedClipDataset(cfg, "train", seed=3, tokens_of=tokens_of)
    rows = take(dataset, 6)
    assert any(len({tuple(v.shape) for v in row["video"]}) > 1 for row in rows)  # buckets mixed in a row
    for row in rows:
        assert sum(tokens_of(Bucket(*v.shape[1:])) for v in row["video"]) <= 300
        assert len(row["video"]) == len(row["key"]) == len(row["caption"])


# -- training on packed rows --------------------------------------------------------------------


@pytest.mark.slow
def test_packed_training_resumes_exactly(catalogued, tmp_path):
    """A packed, bucketed run stopped and resumed repeats the uninterrupted run's losses (three
    short runs: about a minute of CPU on 2 cores)."""
    from megatron_video.config.loader import load_config
    from megatron_video.parallel.state import destroy_distributed
    from megatron_video.training.trainer import train

    def run(name, *extra):
        cfg = load_config("demo", [
            f"run.output_dir={tmp_path / name}", f"data.shards={catalogued}", "train.steps=4",
            "optim.warmup_steps=1", "train.val_every=1000", "train.checkpoint_every=2", "train.val_batches=1",
            "train.tensorboard=false", "data.num_workers=0", "data.val_fraction=0.25", "data.frames=4",
            "data.buckets=[[1,32,32],[4,32,56],[8,32,56]]", "data.packing=true", "data.pack_tokens=300",
            "parallel.microbatches=2", "run.progress=false", *extra])
        try:
            return train(cfg)
        finally:
            destroy_distributed()

    straight = run("straight")
    run("resumed", "train.stop_after=2")
    resumed = run("resumed")
    assert resumed.start_step == 2 and len(straight.losses) == 4
    assert all(math.isfinite(loss) and loss > 0 for loss in straight.losses)
    assert resumed.losses == pytest.approx(straight.losses, rel=1e-6, abs=0)


@pytest.mark.parametrize(("overrides", "key"), [
    (["parallel.context=2", "parallel.context_mode=ring"], "parallel.context_mode.*packed samples"),
    (["data.pack_tokens=100"], "data.pack_tokens"),
    (["data.buckets=[[8,30,56]]"], "data.buckets"),
    (["model.packed_attention=flex"], "model.packed_attention"),
    (["data.source=remote"], "data.source"),
])
def test_training_refuses_unbuilt_packing_before_any_work(catalogued, tmp_path, monkeypatch, overrides, key):
    from megatron_video.config.loader import load_config
    from megatron_video.training.trainer import check_inputs

    monkeypatch.setenv("WORLD_SIZE", "2")
    cfg = load_config("demo", [f"run.output_dir={tmp_path}", f"data.shards={catalogued}", "data.val_fraction=0.25",
                               "data.buckets=[[1,32,32],[8,32,56]]", "data.packing=true", "data.pack_tokens=300",
                               "run.device=cpu", *overrides])
    with pytest.raises(ConfigError, match=key):
        check_inputs(cfg)
