"""Balancing hits its ratios on synthetic caption sets: man/woman 1:1 under the 20% cap, and
vocabulary entries shrunk toward their targets (MetaCLIP); results are boolean version columns."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from curator.balance.config import BalanceConfig
from curator.balance.run import balance_frame, run_balance
from curator.balance.subjects import subject_quota, subjects
from curator.balance.vocabulary import balance_vocabulary
from megatron_video.config import ConfigError
from megatron_video.data.catalog import add_feature_set, read_feature_set


def with_shard_index(root, keys) -> None:
    """A shard index naming `keys` (the catalog's base table; the passes never open the shards)."""
    (root / "catalog").mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"key": list(keys), "shard": "shard-000000.tar"}).to_parquet(root / "catalog" / "shard-000000.parquet")


def caption_set(man: int, woman: int, mixed: int, others: int) -> pd.DataFrame:
    texts = (["man riding horse", "boy playing guitar", "two men talking"] * man)[:man]
    texts += (["woman cooking pasta", "girl on swing", "ladies walking dogs"] * woman)[:woman]
    texts += ["man hugging woman"] * mixed
    texts += (["dog on beach", "city at night", "waves hitting rocks", "manhole cover street"] * others)[:others]
    return pd.DataFrame({"key": [f"clip_{i:05d}" for i in range(len(texts))], "caption_three_word": texts})


def test_subjects_are_found_by_whole_words():
    labels = subjects(pd.Series(["Two WOMEN dancing", "a boy and his mother", "manhole cover street",
                                 "horse in field", None]))
    assert labels.tolist() == ["woman", "mixed", "", "", ""]


def test_subject_balance_is_one_to_one_and_capped_at_twenty_percent(tmp_path):
    captions = caption_set(man=600, woman=200, mixed=50, others=1150)
    with_shard_index(tmp_path, captions["key"])
    add_feature_set(tmp_path, "captions", captions)
    report = run_balance(BalanceConfig(root=str(tmp_path), vocab_cap_fraction=1.0))
    frame = read_feature_set(tmp_path, "balance")
    kept = frame[frame["balance_subject_keep"]]["balance_subject"].value_counts()
    # room = floor(0.2 * 1150 / 0.8) = 287: 143 pairs, then one mixed clip
    assert kept["man"] == kept["woman"] == 143 and kept["mixed"] == 1 and kept[""] == 1150
    share = report["balance_subject_keep"]["gendered_share"]
    assert 0.199 <= share <= 0.2
    assert frame["balance_vocab_keep"].all() and (frame["balance_keep"] == frame["balance_subject_keep"]).all()
    assert json.loads((tmp_path / "reports" / "balance.json").read_text())["all"]["clips"] == 2000
    # Nothing is deleted: every captioned clip has a row, and the version is a filter on it.
    assert len(frame) == 2000 and set(frame["key"]) == set(captions["key"])


def test_subject_balance_below_the_cap_keeps_the_smaller_group_whole():
    assert subject_quota({"": 5000, "man": 600, "woman": 200, "mixed": 50}, 0.2) == {
        "": 5000, "man": 200, "woman": 200, "mixed": 50}


def test_vocabulary_balancing_shrinks_head_entries_toward_their_targets():
    texts = ["dog running fast"] * 1000 + ["cat sleeping quietly"] * 200 + ["bird flying high"] * 20
    keys = pd.Series([f"k{i:05d}" for i in range(len(texts))])
    keep, counts = balance_vocabulary(keys, pd.Series(texts), cap=61, targets={"cat": 24},
                                      vocabulary=["dog", "cat", "bird"])
    assert counts.to_dict() == {"dog": 1000, "cat": 200, "bird": 20}
    kept = pd.Series(texts)[keep].str.split().str[0].value_counts()
    # Bernoulli draws: within three standard deviations of each target; the tail is kept whole.
    assert abs(kept["dog"] - 61) <= 3 * np.sqrt(61 * (1 - 61 / 1000))
    assert abs(kept["cat"] - 24) <= 3 * np.sqrt(24 * (1 - 24 / 200))
    assert kept["bird"] == 20


def test_vocabulary_balancing_flattens_the_word_distribution_over_all_words():
    """Entries are every caption word but stop words; the clip survives if any of its entries
    draws it, so a head word is cut to a few times its cap while the tail stays whole."""
    rng = np.random.default_rng(0)
    nouns = [f"noun{i}" for i in range(40)]
    weights = 1.0 / np.arange(1, 41) ** 1.5  # Zipf-like: the head dominates
    picks = rng.choice(40, size=3000, p=weights / weights.sum())
    captions = pd.DataFrame({"key": [f"k{i}" for i in range(3000)],
                             "caption_three_word": [f"a {nouns[p]} moving" for p in picks]})
    frame = balance_frame(captions, BalanceConfig(vocab_cap_fraction=0.02))
    before = pd.Series(picks).value_counts()
    after = pd.Series(picks[frame["balance_vocab_keep"].to_numpy()]).value_counts()
    cap = round(0.02 * 3000)
    # `moving` is in every caption, so every clip has a second chance through it: <= cap + cap extra
    assert after[0] <= 2 * cap + 3 * np.sqrt(2 * cap) and before[0] > 10 * cap
    tail = before[before <= cap / 4].index
    assert (after.reindex(tail, fill_value=0) >= before[tail] * 0.99).all()


def test_bad_balance_config_is_refused():
    with pytest.raises(ConfigError, match="cap_fraction"):
        BalanceConfig(cap_fraction=0.0)
    with pytest.raises(ConfigError, match="vocab_targets"):
        BalanceConfig(vocab_targets={"dog": 2.0})
