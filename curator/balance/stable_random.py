"""Uniform draws in [0, 1) that are a pure function of (clip key, salt, seed): a clip's selection
never depends on the order of the catalog or on which other clips are present."""
from __future__ import annotations

import hashlib

import numpy as np


def stable_uniform(keys, salt: str, seed: int) -> np.ndarray:
    digests = (hashlib.blake2b(f"{seed}:{salt}:{key}".encode(), digest_size=8).digest() for key in keys)
    return np.array([int.from_bytes(d, "big") / 2.0 ** 64 for d in digests], dtype=np.float64)
