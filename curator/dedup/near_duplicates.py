"""Near-duplicate removal within semantic buckets (Summer-22B 3.8).

Clips are bucketed by their three-word caption ("man riding horse"), so only clips that could be
duplicates are ever compared; each bucket is clustered by the GPU k-means (cosine) into clusters of
about `cluster_size` clips; within a cluster, clips are ranked (preferred first: longest, or a
score column) and a clip is removed when its cosine similarity to a higher-ranked clip of its
cluster reaches `threshold`, whether that clip is kept or itself removed (the SemDeDup rule: one
matmul per cluster, no loop over pairs).
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from curator.dedup.config import DedupConfig
from curator.dedup.kmeans import fit_kmeans


def bucket_of(three_word_caption: str) -> str:
    """The bucket name: lower case, letters and digits only, single spaces."""
    return " ".join(re.findall(r"[a-z0-9]+", str(three_word_caption).lower()))


@dataclass
class BucketResult:
    cluster: np.ndarray  # [n] cluster id within the bucket
    duplicate_of: np.ndarray  # [n] index (within the bucket) of the clip it duplicates, -1 when kept
    similarity: np.ndarray  # [n] highest cosine similarity to a higher-ranked clip of its cluster


def dedup_bucket(embeddings: torch.Tensor, rank: np.ndarray, cfg: DedupConfig) -> BucketResult:
    """Near-duplicates among one bucket's clips: embeddings [n, d] (any device), rank [n] (0 =
    most preferred; lower ranks are kept over higher ones)."""
    n = embeddings.shape[0]
    unit = torch.nn.functional.normalize(embeddings.float(), dim=1)
    clusters = min(n, math.ceil(n / cfg.cluster_size))
    if clusters > 1:
        labels = fit_kmeans(unit, dataclasses.replace(cfg.kmeans, clusters=clusters)).labels.cpu().numpy()
    else:
        labels = np.zeros(n, dtype=np.int64)
    duplicate_of = np.full(n, -1, dtype=np.int64)
    similarity = np.zeros(n, dtype=np.float32)
    for cluster in np.unique(labels):
        members = np.flatnonzero(labels == cluster)
        members = members[np.argsort(rank[members], kind="stable")]
        vectors = unit[torch.from_numpy(members).to(unit.device)]
        # similarity of each member to every higher-ranked member (strictly earlier in the order)
        similarities = vectors @ vectors.T
        earlier = similarities.masked_fill(torch.triu(torch.ones_like(similarities, dtype=torch.bool)), -2.0)
        best, which = earlier.max(1)
        best, which = best.cpu().numpy(), which.cpu().numpy()
        removed = best >= cfg.threshold
        similarity[members] = np.maximum(best, 0.0)
        duplicate_of[members[removed]] = members[which[removed]]
    return BucketResult(labels, duplicate_of, similarity)


def dedup_clips(clips: pd.DataFrame, embeddings: torch.Tensor, cfg: DedupConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Near-duplicates over clips (columns `key`, `bucket`, and cfg.prefer when set: higher is kept
    first; ties and no column: by key) with one embedding row each.

    Returns the feature set (key, dedup_bucket, dedup_cluster, dedup_keep, dedup_duplicate_of,
    dedup_similarity) and the per-bucket report (bucket, clips, clusters, removed, removed_fraction).
    """
    clips, prefer = clips.reset_index(drop=True), cfg.prefer
    order_columns = ([prefer] if prefer else []) + ["key"]
    ranking = clips.sort_values(order_columns, ascending=[False] * bool(prefer) + [True], kind="stable")
    position = pd.Series(np.arange(len(clips)), index=ranking.index).reindex(clips.index).to_numpy()
    keys = clips["key"].to_numpy()
    rows, report = [], []
    for bucket, index in clips.groupby("bucket", sort=True).indices.items():
        result = dedup_bucket(embeddings[torch.from_numpy(index).to(embeddings.device)], position[index], cfg)
        kept = result.duplicate_of < 0
        rows.append(pd.DataFrame({
            "key": keys[index], "dedup_bucket": bucket, "dedup_cluster": result.cluster, "dedup_keep": kept,
            "dedup_duplicate_of": np.where(kept, None, keys[index][np.maximum(result.duplicate_of, 0)]),
            "dedup_similarity": result.similarity}))
        report.append({"bucket": bucket, "clips": len(index), "clusters": len(np.unique(result.cluster)),
                       "removed": int((~kept).sum()), "removed_fraction": float((~kept).mean())})
    return pd.concat(rows, ignore_index=True), pd.DataFrame(report)
