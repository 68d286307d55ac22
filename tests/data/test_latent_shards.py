"""Latent shards (`mvideo encode`): training on them gives the loss of inline encoding; a killed
encode run resumes exactly once per shard; a selection is honoured; inconsistent latents are refused."""
import logging
import pathlib
import shutil

import pandas as pd
import pytest
import torch
import webdataset as wds

from megatron_video.config import ConfigError
from megatron_video.config.loader import load_config
from megatron_video.data.latent_encoding import encode_latents
from megatron_video.data.latent_shards import EMPTY_PROMPT, LatentStore, read_sample
from megatron_video.data.sources import check_source
from megatron_video.parallel.state import destroy_distributed
from megatron_video.testing.tiny import tiny_umt5_overrides
from megatron_video.training import build as build_module
from megatron_video.training.trainer import train


def _config(shards, run_dir, *extra):
    return load_config("demo", [
        f"run.output_dir={run_dir}", f"data.shards={shards}", "train.steps=2", "optim.warmup_steps=1",
        "train.val_every=1000", "train.checkpoint_every=1000", "train.val_batches=1", "train.tensorboard=false",
        "train.cfg_dropout=0.5", "data.num_workers=0", "data.val_fraction=0.25", "data.frames=4",
        "data.batch_size=2", "run.progress=false", "encode.batch_size=3", *extra])


def _samples(latents: pathlib.Path) -> dict[str, dict]:
    shards = sorted(str(p) for p in (latents / "shards").glob("*.tar"))
    return {s["__key__"]: read_sample(s) for s in wds.WebDataset(shards, shardshuffle=False, empty_check=False)}


@pytest.fixture(scope="module")
def encoded(shard_root, tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("latents")
    summary = encode_latents(_config(shard_root, out / "encode_run", f"encode.output={out}"))
    assert (summary.shards, summary.already_done, summary.clips, summary.failed) == (2, 0, 8, 1)
    return out


@pytest.fixture(autouse=True)
def _fresh_process_groups():
    yield
    destroy_distributed()


def _not_built(*args, **kwargs):
    raise AssertionError("a run on latent shards must not build the VAE or the text encoder")


def test_latent_shards_train_to_the_loss_of_inline_encoding(shard_root, encoded, tmp_path, monkeypatch):
    # Two steps of two clips: the 4 training clips' first epoch, whose windows the encode run cut
    # (a later epoch draws new windows inline, while latent shards keep theirs).
    inline = train(_config(shard_root, tmp_path / "inline"))
    destroy_distributed()
    # Neither encoder is built: the dropped captions' states are the empty prompt stored by encode.
    monkeypatch.setattr(build_module, "build_codec", _not_built)
    monkeypatch.setattr(build_module, "build_text_encoder", _not_built)
    latent = train(_config(shard_root, tmp_path / "latent", "data.source=latents", f"data.latents={encoded}"))
    # The same clips, windows, text dropout, noise and timesteps, so exactly the same losses on CPU.
    assert latent.losses == inline.losses and latent.val_loss == inline.val_loss
    # The trainer's text dropout (torch.rand seeded by the step) dropped a caption: the empty prompt's
    # states were swapped into the stored ones.
    assert any(bool((torch.rand(2, generator=torch.Generator().manual_seed(step)) < 0.5).any()) for step in range(2))
    sample = next(iter(_samples(encoded).values()))
    assert sample["latents"].shape == (48, 4, 8, 14) and sample["text"].shape == (16, 384)
    assert sample["caption"] == "a video clip from Megamind"


def test_a_killed_encode_run_resumes_with_the_missing_shards_only(shard_root, encoded, tmp_path, caplog):
    out = tmp_path / "latents"
    shutil.copytree(encoded, out)
    before = _samples(out)
    first = out / "shards" / "shards--shard-000000.tar"
    stamp = first.stat().st_mtime_ns
    # Killed while writing the second shard: its partial tar exists, its tar was never renamed into place.
    (out / "shards" / "shards--shard-000001.tar").rename(out / "shards" / "shards--shard-000001.tar.partial")
    with open(out / "shards" / "shards--shard-000001.tar.partial", "r+b") as partial:
        partial.truncate(1000)
    with pytest.raises(ConfigError, match="1 of its 2 shards") as refused:
        check_source(_config(shard_root, tmp_path, "data.source=latents", f"data.latents={out}"))
    assert refused.value.key == "data.latents"
    with caplog.at_level(logging.INFO, logger="megatron_video.data.latent_encoding"):
        summary = encode_latents(_config(shard_root, tmp_path / "run", f"encode.output={out}"))
    assert (summary.shards, summary.already_done, summary.clips, summary.failed) == (2, 1, 4, 1)
    assert [line for line in caplog.messages if line.startswith("encode shard=")] == [
        line for line in caplog.messages if line.startswith("encode shard=shards--shard-000001 clips=4 failed=1")]
    assert first.stat().st_mtime_ns == stamp
    after = _samples(out)
    assert sorted(after) == sorted(before)
    for key, sample in before.items():
        assert torch.equal(after[key]["latents"], sample["latents"]) and torch.equal(after[key]["mask"], sample["mask"])
        assert torch.allclose(after[key]["text"], sample["text"], rtol=1e-6, atol=1e-7)
    # A rerun with everything done encodes nothing, but restores a missing empty prompt, without which
    # a run on the latents is refused.
    (out / EMPTY_PROMPT).unlink()
    with pytest.raises(ConfigError, match=EMPTY_PROMPT) as refused:
        check_source(_config(shard_root, tmp_path, "data.source=latents", f"data.latents={out}"))
    assert refused.value.key == "data.latents"
    assert encode_latents(_config(shard_root, tmp_path / "run", f"encode.output={out}")).clips == 0
    restored, original = (torch.load(root / EMPTY_PROMPT, weights_only=True) for root in (out, encoded))
    assert torch.equal(restored["states"], original["states"]) and torch.equal(restored["mask"], original["mask"])


@pytest.mark.parametrize("override", ["data.height=48", "data.frames=8", "encoders.max_text_len=8",
                                      "encoders.pixel_factor=2"])
def test_latents_of_other_settings_are_refused_naming_the_key(shard_root, encoded, tmp_path, override):
    key = override.split("=")[0]
    cfg = _config(shard_root, tmp_path, "data.source=latents", f"data.latents={encoded}", override)
    with pytest.raises(ConfigError) as refused:
        check_source(cfg)
    assert refused.value.key == key
    with pytest.raises(ConfigError) as refused:
        encode_latents(_config(shard_root, tmp_path, f"encode.output={encoded}", override))
    assert refused.value.key == "encode.output" and key in str(refused.value)


def test_a_directory_without_a_manifest_is_refused(shard_root, tmp_path):
    with pytest.raises(ConfigError, match="mvideo encode") as refused:
        check_source(_config(shard_root, tmp_path, "data.source=latents", f"data.latents={tmp_path}"))
    assert refused.value.key == "data.latents"


def test_encode_and_training_honour_the_catalog_selection(shard_root, tmp_path):
    curated = tmp_path / "curated"
    shutil.copytree(shard_root, curated)
    (curated / "catalog").mkdir()
    for shard in range(2):
        starts = [(shard * 4 + index) * 12 for index in range(4)]
        pd.DataFrame({"key": [f"megamind_{s:06d}" for s in starts], "shard": f"shard-{shard:06d}.tar",
                      "start_frame": starts}).to_parquet(curated / "catalog" / f"shard-{shard:06d}.parquet")
    out = tmp_path / "latents"
    summary = encode_latents(_config(curated, tmp_path / "run", f"encode.output={out}",
                                     "data.filter='start_frame < 36'"))
    assert (summary.shards, summary.clips, summary.failed) == (1, 3, 0)
    assert sorted(_samples(out)) == ["megamind_000000", "megamind_000012", "megamind_000024"]
    latents = ("data.source=latents", f"data.latents={out}")
    assert check_source(_config(curated, tmp_path, *latents, "data.filter='start_frame < 24'")) == {
        "megamind_000000", "megamind_000012"}
    assert len(LatentStore(out).keys()) == 3
    with pytest.raises(ConfigError, match="do not hold") as refused:
        check_source(_config(curated, tmp_path, *latents, "data.filter='start_frame > 12'"))
    assert refused.value.key == "data.filter"


@pytest.mark.gpu
def test_latents_encoded_on_cuda_train_to_the_loss_of_inline_encoding_on_cuda(shard_root, tmp_path):
    # A tiny UMT5 as text encoder: the GPU machine has transformers, not MiniLM's wheel.
    cuda = ("run.device=cuda", *tiny_umt5_overrides(tmp_path / "umt5"))
    encode_latents(_config(shard_root, tmp_path / "encode", f"encode.output={tmp_path / 'latents'}", *cuda))
    inline = train(_config(shard_root, tmp_path / "inline", *cuda))
    destroy_distributed()
    latent = train(_config(shard_root, tmp_path / "latent", *cuda, "data.source=latents",
                           f"data.latents={tmp_path / 'latents'}"))
    # bf16 autocast on the GPU: the same inputs, but kernels need not be bit-reproducible.
    assert latent.losses == pytest.approx(inline.losses, rel=1e-3)


def test_only_latent_sources_skip_the_encoders(tmp_path):
    """data.encodes_inline, the one rule the trainer and `mvideo ema` build their encoders by."""
    assert load_config("demo", ["data.source=clips"]).data.encodes_inline
    assert load_config("demo", ["data.source=remote"]).data.encodes_inline
    assert not load_config("demo", ["data.source=latents", f"data.latents={tmp_path}"]).data.encodes_inline
