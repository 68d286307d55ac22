"""The DALI loader: on CPU over VP9 shards (CI), with H.264 through the GPU decoder (gpu-marked).
Same contract as the CPU loader, deterministic, exact resume from DALI's checkpoint, unreadable clips
left out and counted, sharded by data-parallel rank, the catalog's selection honoured."""

import numpy as np
import pandas as pd
import pytest
import torch

from megatron_video.config import ConfigError
from megatron_video.config.run import DataConfig
from megatron_video.data import dali_loader as dali_module
from megatron_video.data import loaders
from megatron_video.data.dataset import SKIPPED, ClipDataset
from megatron_video.data.decode import decode_window, probe_clip, to_model_video
from megatron_video.data.loaders import build_train_loader

CPU = torch.device("cpu")
GOOD = 10  # clips of the vp9_root fixture that decode (two more are broken)


def _config(root, **overrides) -> DataConfig:
    values = dict(shards=str(root), frames=4, frame_stride=2, height=32, width=48, batch_size=3,
                  num_workers=2, shuffle_buffer=4, val_fraction=0.0, loader="dali")
    values.update(overrides)
    return DataConfig(**values)


def _batches(loader, count: int) -> list[dict]:
    return [{"key": b["key"], "caption": b["caption"], "video": b["video"].clone(), SKIPPED: b[SKIPPED]}
            for _, b in zip(range(count), loader)]


def _same(first: list[dict], second: list[dict]) -> None:
    assert [b["key"] for b in first] == [b["key"] for b in second]
    assert [b[SKIPPED] for b in first] == [b[SKIPPED] for b in second]
    for a, b in zip(first, second):
        torch.testing.assert_close(a["video"], b["video"], rtol=0, atol=0)


def test_batches_keep_the_cpu_loaders_contract(vp9_root):
    # A window as long as the longest clip starts at frame 0, so both loaders cut the same frames.
    cfg = _config(vp9_root, frames=20, frame_stride=1, height=32, width=40)
    batch = next(build_train_loader(cfg, CPU, seed=0))
    cpu_batch = next(build_train_loader(_config(vp9_root, frames=20, frame_stride=1, height=32, width=40,
                                                loader="cpu", num_workers=0), CPU, seed=0))
    assert batch["video"].shape == cpu_batch["video"].shape == (3, 3, 20, 32, 40)
    assert batch["video"].dtype == cpu_batch["video"].dtype == torch.float32
    assert -1 <= batch["video"].min() and batch["video"].max() <= 1
    assert all(caption.startswith("clip number") for caption in batch["caption"])
    for key, video in zip(batch["key"], batch["video"]):
        data = _member(vp9_root, key)
        frames = decode_window(data, None, 20, 1, torch.Generator().manual_seed(0))
        expected = to_model_video(frames, 32, 40)
        # Different decoders and resize kernels: the same picture within a few grey levels.
        assert (video - expected).abs().mean() < 0.03, key
        assert video.std() > 0.1


def _member(root, key: str) -> bytes:
    import webdataset as wds

    for sample in wds.WebDataset([str(p) for p in sorted((root / "shards").glob("*.tar"))], shardshuffle=False):
        if sample["__key__"] == key:
            return sample["mp4"]
    raise KeyError(key)


def test_same_seed_same_batches_and_exact_resume_from_the_checkpoint(vp9_root):
    cfg = _config(vp9_root)
    straight_loader = build_train_loader(cfg, CPU, seed=5)
    straight = _batches(straight_loader, 3)
    state = straight_loader.state_dict()
    straight += _batches(straight_loader, 4)
    _same(straight, _batches(build_train_loader(cfg, CPU, seed=5), 7))
    assert [b["key"] for b in straight] != [b["key"] for b in _batches(build_train_loader(cfg, CPU, seed=6), 7)]
    assert state["batches"] == 3
    # From DALI's reader checkpoint, and (a run first saved by the CPU loader) by reading 3 batches.
    resumed = build_train_loader(cfg, CPU, seed=5, skip_batches=3, state=state)
    _same(straight[3:], _batches(resumed, 4))
    assert resumed.state_dict()["batches"] == 7
    _same(straight[3:], _batches(build_train_loader(cfg, CPU, seed=5, skip_batches=3), 4))
    # The two unreadable clips were counted once, in the first batch; a resumed loader does not recount.
    assert [b[SKIPPED] for b in straight] == [2, 0, 0, 0, 0, 0, 0]
    # Every epoch yields every readable clip: 7 batches of 3 cover the 10 clips twice.
    keys = [k for b in straight for k in b["key"]]
    assert len(set(keys)) == GOOD


def test_unreadable_clips_are_left_out_and_counted(vp9_root, caplog):
    loader = build_train_loader(_config(vp9_root), CPU, seed=0)
    assert sorted(loader.unreadable) == ["garbage_000000", "truncated_000000"]
    assert "truncated: " in caplog.text
    batches = _batches(loader, 8)
    keys = {k for b in batches for k in b["key"]}
    assert len(keys) == GOOD and not keys & {"garbage_000000", "truncated_000000"}
    # Counted once for the pass over them (the check), not again in the epochs that follow.
    assert sum(b[SKIPPED] for b in batches) == 2


def test_data_parallel_ranks_read_disjoint_clips_and_splits_hold(vp9_root, monkeypatch):
    seen = []
    for rank in range(2):
        monkeypatch.setattr(dali_module, "data_parallel_position", lambda r=rank: (r, 2))
        loader = build_train_loader(_config(vp9_root, val_fraction=0.3), CPU, seed=0)
        seen.append({k for b in _batches(loader, 4) for k in b["key"]})
    train = {s["key"] for s in ClipDataset(_config(vp9_root, val_fraction=0.3, loader="cpu", num_workers=0),
                                           "train", 0, False)}
    assert seen[0] and seen[1] and seen[0].isdisjoint(seen[1])
    assert seen[0] | seen[1] == train


def test_the_catalog_selection_decides_what_dali_reads(vp9_root):
    catalog = pd.concat([pd.read_parquet(p) for p in sorted((vp9_root / "catalog").glob("*.parquet"))])
    loader = build_train_loader(_config(vp9_root, filter="num_frames >= 16"), CPU, seed=0)
    keys = {k for b in _batches(loader, 6) for k in b["key"]}
    assert keys == set(catalog[catalog["num_frames"] >= 16]["key"]) and len(keys) < GOOD
    # Selected clips that are unreadable are still left out.
    loader = build_train_loader(_config(vp9_root, filter="num_frames <= 13"), CPU, seed=0)
    assert sorted(loader.unreadable) == ["garbage_000000", "truncated_000000"]
    assert {k for b in _batches(loader, 2) for k in b["key"]} == {"megamind_000000", "megamind_000080",
                                                                   "megamind_000144"}


def test_impossible_loader_choices_are_refused_by_key(shard_root, vp9_root, monkeypatch):
    with pytest.raises(ConfigError, match="data.loader") as err:  # H.264 without a GPU
        build_train_loader(_config(shard_root), CPU, seed=0)
    assert "h264" in str(err.value)
    with pytest.raises(ConfigError, match="'loader': must be auto, dali or cpu"):  # data. is added by the loader
        DataConfig(loader="nvdec")
    monkeypatch.setattr(loaders, "dali_installed", lambda: False)
    with pytest.raises(ConfigError, match="data.loader"):
        loaders.resolve_loader("dali", CPU)
    assert loaders.resolve_loader("auto", torch.device("cuda")) == "cpu"


@pytest.mark.gpu
def test_h264_decodes_on_the_gpu_like_the_cpu_loader(shard_root):
    """The mixed (NVDEC) decoder on the H.264 clips of the shared fixture; one of them is corrupt."""
    cfg = _config(shard_root, frames=12, frame_stride=1, height=32, width=56)
    loader = build_train_loader(cfg, torch.device("cuda"), seed=0)
    assert loader.unreadable == ["broken_000000"]
    batch = next(loader)
    assert batch["video"].is_cuda and batch["video"].shape == (3, 3, 12, 32, 56)
    for key, video in zip(batch["key"], batch["video"].cpu()):
        frames = decode_window(_member(shard_root, key), None, 12, 1, torch.Generator().manual_seed(0))
        assert (video - to_model_video(frames, 32, 56)).abs().mean() < 0.03, key
    assert np.isfinite(batch["video"].float().cpu().numpy()).all()


@pytest.fixture(scope="module")
def bitstream_root(vp9_root, tmp_path_factory):
    """Five clips of vp9_root, one with its frames' bytes scrambled: complete, so the demux check
    passes it, yet the decoder fails on it."""
    import webdataset as wds

    root = tmp_path_factory.mktemp("bitstream")
    samples = list(wds.WebDataset(str(vp9_root / "shards" / "shard-000000.tar"), shardshuffle=False))
    scrambled = bytearray(samples[2]["mp4"])
    for i in range(len(scrambled) // 3, len(scrambled) - 200, 7):
        scrambled[i] ^= 0x5A
    samples[2]["mp4"] = bytes(scrambled)
    probe_clip(samples[2]["mp4"])  # passes the check
    with wds.TarWriter(str(root / "clips.tar")) as sink:
        for sample in samples:
            sink.write({"__key__": sample["__key__"], "mp4": sample["mp4"], "json": sample["json"]})
    return root, samples[2]["__key__"]


def test_a_clip_the_decoder_fails_on_is_left_out_and_the_run_goes_on_exactly(bitstream_root):
    root, bad = bitstream_root
    cfg = _config(root, batch_size=2)
    loader = build_train_loader(cfg, CPU, seed=1)
    assert loader.unreadable == []
    straight = _batches(loader, 6)
    assert loader.unreadable == [bad]
    keys = [k for b in straight for k in b["key"]]
    assert bad not in keys and len(set(keys)) == 4
    assert min(len(b["key"]) for b in straight) == 1  # the mended batch, one clip short
    # A run resumed before the bad clip meets and mends it the same way.
    again = build_train_loader(cfg, CPU, seed=1, state=None, skip_batches=1)
    _same(straight[1:], _batches(again, 5))
    assert again.unreadable == [bad]
