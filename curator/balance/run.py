"""The balance pass over a curated output: the captions feature set in, the `balance` feature set
out (one boolean column per dataset version), and reports/balance.json.

balance_vocab_keep: vocabulary-balanced; balance_subject_keep: man/woman balanced; balance_keep:
both, the subject balance applied to the vocabulary-balanced clips so the final version holds its
1:1 ratio and share cap exactly.
"""
from __future__ import annotations

import json
import logging
import pathlib

import numpy as np
import pandas as pd

from curator.balance.config import BalanceConfig
from curator.balance.subjects import balance_subjects, subjects
from curator.balance.vocabulary import balance_vocabulary
from megatron_video.config import ConfigError
from megatron_video.data.catalog import add_feature_set, read_feature_set

log = logging.getLogger(__name__)


def balance_frame(captions: pd.DataFrame, cfg: BalanceConfig) -> pd.DataFrame:
    """The `balance` feature set for clips (columns key and cfg.column)."""
    keys, text = captions["key"], captions[cfg.column]
    clips = len(captions)
    share = {str(k): max(1, round(float(v) * clips)) for k, v in cfg.vocab_targets.items()}
    vocab_keep, _ = balance_vocabulary(keys, text, max(1, round(cfg.vocab_cap_fraction * clips)), share,
                                       list(cfg.vocabulary), cfg.seed)
    labels = subjects(text, cfg.man_pattern, cfg.woman_pattern)
    subject_keep = balance_subjects(keys, labels, cfg.cap_fraction, cfg.seed)
    both = np.zeros(clips, dtype=bool)
    survivors = np.flatnonzero(vocab_keep)
    both[survivors] = balance_subjects(keys.iloc[survivors], labels.iloc[survivors], cfg.cap_fraction, cfg.seed)
    return pd.DataFrame({"key": keys.to_numpy(), "balance_subject": labels.to_numpy(),
                         "balance_vocab_keep": vocab_keep, "balance_subject_keep": subject_keep,
                         "balance_keep": both})


def summary(frame: pd.DataFrame, column: str) -> dict:
    kept = frame[frame[column]]
    counts = kept["balance_subject"].value_counts().to_dict()
    gendered = sum(v for k, v in counts.items() if k)
    return {"clips": len(kept), "subjects": {k or "neither": int(v) for k, v in counts.items()},
            "gendered_share": gendered / max(len(kept), 1)}


def run_balance(cfg: BalanceConfig) -> dict:
    if not cfg.root:
        raise ConfigError("root", "name the curated output to balance (balance.root=DIR)")
    root = pathlib.Path(cfg.root)
    try:
        captions = read_feature_set(root, cfg.captions)
    except FileNotFoundError as err:
        raise ConfigError("captions", f"{err}: run `mvideo caption` first") from None
    if cfg.column not in captions.columns:
        raise ConfigError("column", f"feature set '{cfg.captions}' has no column '{cfg.column}'")
    frame = balance_frame(captions, cfg)
    add_feature_set(root, "balance", frame, replace=True)
    frame["all"] = True
    report = {name: summary(frame, name) for name in ("all", "balance_vocab_keep", "balance_subject_keep",
                                                      "balance_keep")}
    (root / "reports").mkdir(exist_ok=True)
    (root / "reports" / "balance.json").write_text(json.dumps(report, indent=1) + "\n")
    for name, figures in report.items():
        log.info("balance %s: clips=%d subjects=%s gendered_share=%.3f", name, figures["clips"], figures["subjects"],
                 figures["gendered_share"])
    return report
