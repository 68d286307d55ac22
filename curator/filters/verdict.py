"""Pass or fail for every clip of a curated output, from the filter scores the catalog stores.

The filter stages write scores only (feature set `filter_scores`, one file per shard); this pass
reads them all, applies the thresholds of `curate.filters` and writes feature set `filter_verdict`
(key, filter_pass, filter_reason, motion_class, duplicate_of), replacing the previous verdict. It
runs at the end of every `mvideo curate`, a rerun over a finished output included, so changing a
threshold re-judges every clip without decoding any video. Near-duplicates are found here, across
every clip of the output (its part, for a partitioned run).

Rules, in order; a clip's reason is the first that fails, and a missing score (a filter that did
not run, or a model that was not given) fails nothing:
monochrome, tinted, static/slideshow, near-duplicate, motion class, faces, text, aesthetic, technical.
Select the kept clips with the catalog filter `filter_pass` (e.g. `data.filter=filter_pass`).
"""
from __future__ import annotations

import logging
import pathlib

import numpy as np
import pandas as pd

from curator.filters.config import FilterConfig
from curator.filters.motion import motion_class
from curator.filters.phash import near_duplicates
from curator.stages.filter_duplicates import HASH_COLUMNS
from curator.stages.shard_writer import SCORES_FEATURE_SET
from megatron_video.data.catalog import add_feature_set, feature_set_files, read_feature_set

log = logging.getLogger(__name__)
VERDICT_FEATURE_SET = "filter_verdict"


def _column(scores: pd.DataFrame, name: str) -> pd.Series:
    return scores[name] if name in scores.columns else pd.Series(np.nan, index=scores.index)


def judge(scores: pd.DataFrame, cfg: FilterConfig) -> pd.DataFrame:
    """The verdict frame of a scores frame (a `key` column and any score columns)."""
    n = len(scores)
    reasons = pd.Series([""] * n, index=scores.index, dtype=object)

    def fail(mask: pd.Series, reason: str) -> None:
        reasons[mask.fillna(False).astype(bool) & (reasons == "")] = reason

    fail(_column(scores, "colourfulness") < cfg.min_colourfulness, "monochrome")
    fail(_column(scores, "hue_spread") < cfg.min_hue_spread, "tinted")
    still = _column(scores, "still_fraction") > cfg.max_still_fraction
    fail(still & (_column(scores, "jumps") > 0), "slideshow")
    fail(still, "static")
    duplicate_of = pd.Series([None] * n, index=scores.index, dtype=object)
    if all(c in scores.columns for c in HASH_COLUMNS):
        hashed = scores[HASH_COLUMNS].notna().all(axis=1)
        rows = scores[hashed]
        hashes = rows[HASH_COLUMNS].to_numpy(dtype=np.int64).view(np.uint64)
        found = near_duplicates(rows["key"].tolist(), hashes, cfg.duplicate_max_distance)
        duplicate_of = scores["key"].map(found).astype(object)
        fail(duplicate_of.notna(), "near-duplicate")
    classes = pd.Series([None] * n, index=scores.index, dtype=object)
    if "motion_magnitude" in scores.columns:
        for i, row in scores.iterrows():
            if pd.notna(row["motion_magnitude"]):
                classes[i] = motion_class({"magnitude": row["motion_magnitude"],
                                           "uniformity": row["motion_uniformity"],
                                           "consistency": row["motion_consistency"]},
                                          cfg.min_motion_magnitude, cfg.min_uniformity, cfg.min_consistency)
        for rejected in cfg.reject_motion:
            fail(classes == rejected, f"motion {rejected}")
    if cfg.max_faces >= 0:
        fail(_column(scores, "faces") > cfg.max_faces, "faces")
    fail(_column(scores, "text_coverage") > cfg.max_text_coverage, "text")
    fail(_column(scores, "aesthetic_score") < cfg.min_aesthetic_score, "aesthetic")
    fail(_column(scores, "technical_score") < cfg.min_technical_score, "technical")
    return pd.DataFrame({"key": scores["key"], "filter_pass": reasons == "", "filter_reason": reasons,
                         "motion_class": classes, "duplicate_of": duplicate_of})


def apply_filters(root: str | pathlib.Path, cfg: FilterConfig) -> dict[str, int]:
    """Judge every scored clip of the curated output at `root` and write feature set
    `filter_verdict`; returns the rejected clips counted by reason (empty when nothing is scored)."""
    if SCORES_FEATURE_SET not in feature_set_files(root):
        return {}
    verdict = judge(read_feature_set(root, SCORES_FEATURE_SET), cfg)
    add_feature_set(root, VERDICT_FEATURE_SET, verdict, replace=True)
    rejected = verdict.loc[~verdict["filter_pass"], "filter_reason"].value_counts()
    counts = {str(reason): int(count) for reason, count in rejected.items()}
    log.info("curate filters clips=%d kept=%d rejected=%s", len(verdict), int(verdict["filter_pass"].sum()), counts)
    return counts
