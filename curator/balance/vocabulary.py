"""Vocabulary balancing toward a target distribution, as MetaCLIP balances its metadata entries
(Xu et al. 2023, "Demystifying CLIP Data", Algorithm 1).

Each clip is matched to the vocabulary entries its caption contains; an entry matched by c clips
with a target count t draws each of them with probability min(1, t / c); a clip is kept when any of
its entries draws it (clips matching no entry are kept). Head entries shrink toward their targets,
tail entries keep every clip. The flat target (every entry capped at t) is MetaCLIP's; per-entry
targets give any other distribution.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

from curator.balance.stable_random import stable_uniform

STOPWORDS = frozenset({"a", "an", "the", "of", "on", "in", "at", "to", "and", "with", "by", "for", "from", "into",
                       "over", "under", "is", "are", "its", "their"})


def entries(caption: str, vocabulary: frozenset[str] | None) -> list[str]:
    """The caption's vocabulary entries (its words, lower case; stop words never count)."""
    words = dict.fromkeys(re.findall(r"[a-z0-9]+", str(caption).lower()))
    return [w for w in words if w not in STOPWORDS and (vocabulary is None or w in vocabulary)]


def balance_vocabulary(keys: pd.Series, captions: pd.Series, cap: int, targets: dict[str, int] | None = None,
                       vocabulary: list[str] | None = None, seed: int = 0) -> tuple[np.ndarray, pd.Series]:
    """Which clips the balanced version keeps, and every entry's count before balancing."""
    allowed = frozenset(w.lower() for w in vocabulary) if vocabulary else None
    pairs = pd.DataFrame({"position": np.arange(len(keys)), "key": np.asarray(keys, dtype=object),
                          "entry": [entries(c, allowed) for c in captions]}).explode("entry").dropna()
    counts = pairs["entry"].value_counts()
    target = pairs["entry"].map(lambda w: (targets or {}).get(w, cap)).astype(float)
    chance = np.minimum(1.0, target / pairs["entry"].map(counts))
    draw = stable_uniform(pairs["key"] + ":" + pairs["entry"], "vocabulary", seed)
    drawn = pairs["position"][(draw < chance).to_numpy()]
    keep = np.ones(len(keys), dtype=bool)
    keep[pairs["position"].unique().astype(np.int64)] = False
    keep[drawn.to_numpy(dtype=np.int64)] = True
    return keep, counts
