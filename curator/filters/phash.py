"""Perceptual hashes and near-duplicate clips across a run.

A frame's pHash: greyscale at 32x32, 2-D DCT, the 8x8 lowest frequencies without the DC term
compared with their median -> 64 bits (the classic pHash of Zauner 2010). A clip is hashed at
HASHED_POSITIONS of its length (first, middle, last frame region), so a clip and a re-encode,
rescale or slight recolour of it agree, while two different shots of one scene do not on all three.
Two clips are near-duplicates when every position's Hamming distance is at most `max_distance`;
of each group the clip first in key order is kept. SIFT matching (`sift_similarity`) confirms a
pair where hashes alone are too coarse: the fraction of keypoints with a distinctive match (Lowe's
ratio test).
"""
from __future__ import annotations

import cv2
import numpy as np

HASHED_POSITIONS = (0.1, 0.5, 0.9)


def phash(frame: np.ndarray) -> int:
    """The 64-bit pHash of an RGB uint8 frame, as an unsigned int."""
    grey = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
    small = cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8].flatten()[1:]
    bits = low > np.median(low)
    return int(sum(1 << i for i, bit in enumerate(bits) if bit))


def clip_hashes(frames: np.ndarray) -> list[int]:
    """pHashes of the frames at HASHED_POSITIONS of the clip (or of exactly those frames, when
    `frames` holds one per position)."""
    if len(frames) == len(HASHED_POSITIONS):
        return [phash(f) for f in frames]
    return [phash(frames[min(len(frames) - 1, int(p * len(frames)))]) for p in HASHED_POSITIONS]


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bit distances between uint64 arrays (broadcast)."""
    x = np.bitwise_xor(a, b)
    return np.unpackbits(x.view(np.uint8).reshape(*x.shape, 8), axis=-1).sum(axis=-1)


def near_duplicates(keys: list[str], hashes: np.ndarray, max_distance: int) -> dict[str, str]:
    """{duplicate key: the kept key it repeats} over clips with uint64 hashes [N, positions].

    All pairs are compared (N^2 / 2 XORs on 64-bit words: a million clips per part is out of
    scope here; the embedding dedup pass of curator/dedup handles corpus scale)."""
    order = np.argsort(np.asarray(keys, dtype=object), kind="stable")
    hashes = np.asarray(hashes, dtype=np.uint64)[order]
    sorted_keys = [keys[i] for i in order]
    duplicate_of: dict[str, str] = {}
    for i in range(1, len(sorted_keys)):
        close = (hamming(hashes[:i], hashes[i][None]) <= max_distance).all(axis=1)
        earlier = [j for j in np.flatnonzero(close) if sorted_keys[j] not in duplicate_of]
        if earlier:
            duplicate_of[sorted_keys[i]] = sorted_keys[earlier[0]]
    return duplicate_of


def sift_similarity(a: np.ndarray, b: np.ndarray, ratio: float = 0.75) -> float:
    """The fraction of frame a's SIFT keypoints with a distinctive match in frame b (RGB uint8)."""
    sift = cv2.SIFT_create()
    _, da = sift.detectAndCompute(cv2.cvtColor(np.ascontiguousarray(a), cv2.COLOR_RGB2GRAY), None)
    _, db = sift.detectAndCompute(cv2.cvtColor(np.ascontiguousarray(b), cv2.COLOR_RGB2GRAY), None)
    if da is None or db is None or len(da) == 0 or len(db) < 2:
        return 0.0
    pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(da, db, k=2)
    good = sum(1 for m in pairs if len(m) == 2 and m[0].distance < ratio * m[1].distance)
    return good / len(da)
