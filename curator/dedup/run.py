"""The dedup pass over a curated output: buckets from the captions feature set, embeddings (written
as a feature set of their own), near-duplicates per bucket -> feature set `dedup` (dedup_keep is
the dataset version without them; nothing is deleted) and reports/dedup.json (per-bucket figures)."""
from __future__ import annotations

import json
import logging
import pathlib

import numpy as np
import pandas as pd
import torch

from curator.dedup.config import DedupConfig
from curator.dedup.embeddings import CaptionEmbedder, TransformersVisualEmbedder, VisualEmbedder
from curator.dedup.near_duplicates import bucket_of, dedup_clips
from curator.shard_clips import clip_frames
from megatron_video.config import ConfigError
from megatron_video.data.catalog import add_feature_set, read_feature_set, shard_index

log = logging.getLogger(__name__)


def visual_embeddings(rows: pd.DataFrame, embedder: VisualEmbedder, frames: int, batch_size: int) -> torch.Tensor:
    """One embedding per row (columns key and the catalog's shard path), in the rows' order."""
    found: dict[str, torch.Tensor] = {}
    batch: list[tuple[str, np.ndarray]] = []
    for item in clip_frames(rows, frames):
        batch.append(item)
        if len(batch) == batch_size:
            found.update(zip([k for k, _ in batch], embedder.embed([f for _, f in batch])))
            batch = []
    if batch:
        found.update(zip([k for k, _ in batch], embedder.embed([f for _, f in batch])))
    missing = [key for key in rows["key"] if key not in found]
    if missing:
        raise ValueError(f"{len(missing)} clips are missing from their shards (first: {missing[0]})")
    return torch.stack([found[key] for key in rows["key"]])


def embed_clips(clips: pd.DataFrame, cfg: DedupConfig, device: torch.device) -> torch.Tensor:
    if cfg.embedding == "caption":
        return CaptionEmbedder(device).embed(clips[cfg.caption_column].astype(str).tolist())
    embedder = TransformersVisualEmbedder(cfg.visual_model, device)
    return visual_embeddings(clips, embedder, cfg.frames_per_clip, cfg.batch_size)


def run_dedup(cfg: DedupConfig, device: torch.device) -> dict:
    """Dedup the clips of cfg.root that have captions; returns the report written to reports/dedup.json."""
    if not cfg.root:
        raise ConfigError("root", "name the curated output to dedup (dedup.root=DIR)")
    root = pathlib.Path(cfg.root)
    rows = shard_index(root)
    if not len(rows):
        raise ConfigError("root", f"no catalog under {root}: curate into it first")
    try:
        captions = read_feature_set(root, cfg.captions)
    except FileNotFoundError as err:
        raise ConfigError("captions", f"{err}: run `mvideo caption` first") from None
    needed = {"bucket_column": cfg.bucket_column}
    if cfg.embedding == "caption":
        needed["caption_column"] = cfg.caption_column
    for key, column in needed.items():
        if column not in captions.columns:
            raise ConfigError(key, f"feature set '{cfg.captions}' has no column '{column}'")
    if cfg.prefer and cfg.prefer not in rows.columns:
        raise ConfigError("prefer", f"'{cfg.prefer}' is not a catalog column")
    clips = rows.merge(captions, on="key", how="inner")
    clips["bucket"] = clips[cfg.bucket_column].map(bucket_of)
    log.info("dedup clips=%d (of %d in the catalog) buckets=%d embedding=%s", len(clips), len(rows),
             clips["bucket"].nunique(), cfg.embedding)
    embeddings = embed_clips(clips, cfg, device).to(device)
    add_feature_set(root, f"{cfg.embedding}_embedding", replace=True, frame=pd.DataFrame({
        "key": clips["key"], f"{cfg.embedding}_embedding": list(embeddings.cpu().numpy())}))
    features, buckets = dedup_clips(clips, embeddings, cfg)
    add_feature_set(root, "dedup", features, replace=True)
    removed = int((~features["dedup_keep"]).sum())
    report = {"clips": len(features), "removed": removed, "removed_fraction": removed / max(len(features), 1),
              "threshold": cfg.threshold, "embedding": cfg.embedding, "buckets": buckets.to_dict("records")}
    (root / "reports").mkdir(exist_ok=True)
    (root / "reports" / "dedup.json").write_text(json.dumps(report, indent=1) + "\n")
    for bucket in buckets.sort_values("removed_fraction", ascending=False).head(10).itertuples():
        log.info("dedup bucket=%r clips=%d removed=%d (%.1f%%)", bucket.bucket, bucket.clips, bucket.removed,
                 100 * bucket.removed_fraction)
    log.info("dedup removed %d of %d clips (%.1f%%) -> %s", removed, len(features),
             100 * report["removed_fraction"], root / "catalog" / "features" / "dedup.parquet")
    return report
