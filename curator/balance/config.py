"""BalanceConfig: the `balance` section of `mvideo balance` (post-curation, over a curated output)."""
from __future__ import annotations

from dataclasses import dataclass, field

from megatron_video.config import require

# Whole words naming a male / female subject in a three-word caption.
MAN = r"\b(?:man|men|boy|boys|guy|guys|gentleman|gentlemen|male|males|father|son|husband|businessman|he|his)\b"
WOMAN = (r"\b(?:woman|women|girl|girls|lady|ladies|female|females|mother|daughter|wife|businesswoman|"
         r"she|her)\b")


@dataclass
class BalanceConfig:
    root: str = ""  # a curated output
    captions: str = "captions"  # the feature set holding `column`
    column: str = "caption_three_word"
    cap_fraction: float = 0.2  # clips with a man/woman subject: at most this share of the version
    man_pattern: str = MAN
    woman_pattern: str = WOMAN
    vocab_cap_fraction: float = 0.02  # flat target: an entry matches at most about this share of clips
    vocab_targets: dict = field(default_factory=dict)  # entry -> its target share (instead of the cap)
    vocabulary: list = field(default_factory=list)  # the entries; empty: every caption word but stop words
    seed: int = 0

    def __post_init__(self) -> None:
        require(0.0 < self.cap_fraction <= 1.0, "cap_fraction", "must be in (0, 1]")
        require(0.0 < self.vocab_cap_fraction <= 1.0, "vocab_cap_fraction", "must be in (0, 1]")
        require(all(0.0 < float(v) <= 1.0 for v in self.vocab_targets.values()), "vocab_targets",
                "shares must be in (0, 1]")
