"""Near-duplicate removal within three-word-caption buckets: planted duplicates go, distinct clips
stay, the removed fraction is reported per bucket; caption (MiniLM) and visual (a tiny random
SigLIP built from its real config class) embeddings, over a curated output's catalog."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from curator.dedup.config import DedupConfig
from curator.dedup.kmeans import KMeansConfig
from curator.dedup.near_duplicates import bucket_of, dedup_clips
from curator.dedup.run import run_dedup
from megatron_video.config import ConfigError
from megatron_video.data.catalog import add_feature_set, read_feature_set


def planted(distinct: int, duplicates: int, dim: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """`distinct` random unit vectors, then `duplicates` noisy copies of the first ones (cosine
    about 0.99 to their original); returns them and each copy's original index (-1: distinct)."""
    generator = torch.Generator().manual_seed(seed)
    base = torch.nn.functional.normalize(torch.randn(distinct, dim, generator=generator), dim=1)
    copies = base[:duplicates] + 0.1 * torch.randn(duplicates, dim, generator=generator) / dim ** 0.5
    return torch.cat([base, copies]), np.concatenate([np.full(distinct, -1), np.arange(duplicates)])


def test_planted_near_duplicates_are_removed_and_distinct_clips_kept():
    """Three buckets of 300 distinct clips and 40 planted near-duplicates each, clustered into
    about 60-clip clusters; a vector repeated in another bucket is not compared across buckets."""
    frames, vectors, originals = [], [], []
    for b, bucket in enumerate(["man riding horse", "woman cooking pasta", "dog on beach"]):
        emb, original = planted(300, 40, 64, seed=b)
        keys = [f"{b}_{i:04d}" for i in range(len(emb))]
        # The copy is the longer clip in half the pairs: the longer one of a pair is kept.
        duration = np.ones(len(emb))
        duration[300:320] = 2.0
        frames.append(pd.DataFrame({"key": keys, "bucket": bucket, "duration_s": duration}))
        vectors.append(emb)
        originals.append([keys[o] if o >= 0 else None for o in original])
    vectors[2][299] = vectors[0][299]  # the same content under another three-word caption: kept in both
    clips = pd.concat(frames, ignore_index=True)
    cfg = DedupConfig(threshold=0.95, cluster_size=64, kmeans=KMeansConfig(metric="cosine", batch_size=128))
    features, report = dedup_clips(clips, torch.cat(vectors), cfg)

    features = features.set_index("key").loc[clips["key"]]
    original = pd.Series(np.concatenate(originals), index=clips["key"].to_numpy())
    is_copy = original.notna().to_numpy()
    copy_longer = np.zeros(len(clips), dtype=bool)
    for b in range(3):
        copy_longer[b * 340 + 300: b * 340 + 320] = True
    original_longer = is_copy & ~copy_longer
    assert not features["dedup_keep"][original_longer].any()
    assert (features["dedup_duplicate_of"][original_longer] == original[original_longer]).all()
    # The longer copy is kept and its shorter original removed in its place.
    assert features["dedup_keep"][copy_longer].all()
    originals_of_longer = original[copy_longer].to_numpy()
    assert not features.loc[originals_of_longer, "dedup_keep"].any()
    assert features["dedup_keep"].sum() == 3 * 300
    assert (features["dedup_similarity"][~features["dedup_keep"]] >= 0.95).all()
    assert features["dedup_cluster"].max() >= 4  # k-means split each bucket into clusters
    assert list(report["bucket"]) == ["dog on beach", "man riding horse", "woman cooking pasta"]
    assert report["removed"].tolist() == [40, 40, 40]
    assert np.allclose(report["removed_fraction"], 40 / 340)


def test_bucket_names_ignore_case_and_punctuation():
    assert bucket_of("Man, riding  HORSE.") == "man riding horse" == bucket_of(" man riding horse")


@pytest.fixture(scope="module")
def clips_output(tmp_path_factory, curated_output):
    """Six clips: three distinct patterns, an exact copy and a slightly altered copy of the first."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:48]
    gradient = np.stack([(xx * 5 + t * 8) % 256 for t in range(8)]).astype(np.uint8)
    base = np.stack([gradient, gradient[:, ::-1], np.full_like(gradient, 90)], axis=-1)
    checker = (((yy // 8 + xx // 8) % 2) * 255).astype(np.uint8)
    clips = {
        "c_base": base,
        "c_copy": base.copy(),
        "c_tinted": np.clip(base.astype(int) + 3, 0, 255).astype(np.uint8),
        "c_checker": np.repeat(np.stack([checker] * 3, -1)[None], 8, 0),
        "c_noise": rng.integers(0, 256, (8, 32, 48, 3), dtype=np.uint8),
        "c_dark": np.full((8, 32, 48, 3), 20, dtype=np.uint8),
    }
    return curated_output(tmp_path_factory.mktemp("post_curation"), clips)


def test_caption_embeddings_remove_the_reworded_caption(clips_output):
    """MiniLM (offline) embeds the detailed captions; the reworded one is a near-duplicate of its
    bucket's first clip, and the bucket's other clip and other buckets' clips stay."""
    add_feature_set(clips_output, "captions", replace=True, frame=pd.DataFrame({
        "key": ["c_base", "c_copy", "c_tinted", "c_checker", "c_noise", "c_dark"],
        "caption_detailed": ["A man rides a brown horse across a green field at sunset.",
                             "A man rides a brown horse across the green field at sunset.",
                             "A man feeds an apple to a brown horse in a stable.",
                             "A black and white checkerboard pattern fills the screen.",
                             "Television static flickers across the whole frame.",
                             "A dark empty room with the lights switched off."],
        "caption_three_word": ["man riding horse", "Man riding horse.", "man riding horse",
                               "checkerboard pattern screen", "static noise screen", "dark empty room"]}))
    report = run_dedup(DedupConfig(root=str(clips_output), threshold=0.95), torch.device("cpu"))
    features = read_feature_set(clips_output, "dedup").set_index("key")
    assert features.loc["c_copy", "dedup_duplicate_of"] == "c_base" and not features.loc["c_copy", "dedup_keep"]
    assert features["dedup_keep"].sum() == 5
    assert report["removed"] == 1
    written = json.loads((clips_output / "reports" / "dedup.json").read_text())
    by_bucket = {row["bucket"]: row for row in written["buckets"]}
    assert by_bucket["man riding horse"]["clips"] == 3 and by_bucket["man riding horse"]["removed"] == 1
    assert by_bucket["dark empty room"]["removed_fraction"] == 0.0
    embeddings = read_feature_set(clips_output, "caption_embedding")
    assert len(embeddings) == 6 and len(embeddings["caption_embedding"].iloc[0]) == 384


@pytest.fixture(scope="module")
def tiny_siglip(tmp_path_factory):
    """A randomly initialised SigLIP built from its real config class, saved as a local checkpoint."""
    from transformers import SiglipConfig, SiglipModel

    torch.manual_seed(0)
    config = SiglipConfig(
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "vocab_size": 100},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                       "num_attention_heads": 2, "image_size": 32, "patch_size": 8})
    path = tmp_path_factory.mktemp("tiny_siglip")
    SiglipModel(config).eval().save_pretrained(str(path))
    return path


def test_visual_embeddings_from_a_local_siglip_remove_the_exact_copy(clips_output, tiny_siglip):
    add_feature_set(clips_output, "captions", replace=True, frame=pd.DataFrame({
        "key": ["c_base", "c_copy", "c_tinted", "c_checker", "c_noise", "c_dark"],
        "caption_three_word": ["pattern"] * 6}))
    cfg = DedupConfig(root=str(clips_output), embedding="visual", visual_model=str(tiny_siglip), threshold=0.9999,
                      prefer="", batch_size=4)
    report = run_dedup(cfg, torch.device("cpu"))
    features = read_feature_set(clips_output, "dedup").set_index("key")
    assert features.loc["c_copy", "dedup_duplicate_of"] == "c_base"
    assert features.drop(index="c_copy")["dedup_keep"].all()
    assert report["buckets"] == [{"bucket": "pattern", "clips": 6, "clusters": 1, "removed": 1,
                                  "removed_fraction": pytest.approx(1 / 6)}]
    embeddings = np.stack(read_feature_set(clips_output, "visual_embedding")["visual_embedding"])
    assert embeddings.shape == (6, 32) and np.allclose(np.linalg.norm(embeddings, axis=1), 1, atol=1e-5)


def test_config_is_refused_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="visual_model"):
        DedupConfig(embedding="visual")
    with pytest.raises(ConfigError, match="kmeans.metric"):
        DedupConfig(kmeans=KMeansConfig(metric="l2"))
    with pytest.raises(ConfigError, match="root"):
        run_dedup(DedupConfig(root=str(tmp_path)), torch.device("cpu"))
