"""Man/woman subject balance: subjects found by regex on the three-word captions, the two groups
subsampled to 1:1, and all clips with a gendered subject capped at `cap_fraction` of the version.

With O clips of neither subject, M man-only, W woman-only and X mixed ("man hugging woman"), the
version keeps m = min(M, W) of each single group and the mixed clips, shrunk so that
(2m + x) <= cap_fraction * (O + 2m + x): pairs are kept before mixed clips. Which clips of a group
are kept is decided by stable per-key draws (stable_random.py).
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

from curator.balance.config import MAN, WOMAN
from curator.balance.stable_random import stable_uniform


def subjects(captions: pd.Series, man: str = MAN, woman: str = WOMAN) -> pd.Series:
    """'man', 'woman', 'mixed' (both) or '' per caption."""
    lower = captions.fillna("").astype(str).str.lower()
    is_man = lower.str.contains(re.compile(man))
    is_woman = lower.str.contains(re.compile(woman))
    labels = np.select([is_man & is_woman, is_man, is_woman], ["mixed", "man", "woman"], "")
    return pd.Series(labels, index=captions.index)


def subject_quota(counts: dict[str, int], cap_fraction: float) -> dict[str, int]:
    """How many clips of each subject the version keeps (see the module docstring)."""
    others = counts.get("", 0)
    # (2m + x) <= f (O + 2m + x)  <=>  2m + x <= f O / (1 - f)
    room = int(np.floor(cap_fraction * others / (1.0 - cap_fraction) + 1e-9)) if cap_fraction < 1 else None
    pairs = min(counts.get("man", 0), counts.get("woman", 0))
    if room is not None:
        pairs = min(pairs, room // 2)
    mixed = counts.get("mixed", 0) if room is None else min(counts.get("mixed", 0), room - 2 * pairs)
    return {"": others, "man": pairs, "woman": pairs, "mixed": mixed}


def balance_subjects(keys: pd.Series, labels: pd.Series, cap_fraction: float, seed: int) -> np.ndarray:
    """Which clips the subject-balanced version keeps (all clips of neither subject)."""
    quota = subject_quota(labels.value_counts().to_dict(), cap_fraction)
    draws = stable_uniform(keys, "subject", seed)
    keep = np.zeros(len(keys), dtype=bool)
    for subject, count in quota.items():
        members = np.flatnonzero((labels == subject).to_numpy())
        keep[members[np.argsort(draws[members], kind="stable")[:count]]] = True
    return keep
