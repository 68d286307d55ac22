"""`mvideo balance root=DIR`: man/woman and vocabulary balancing of the captioned clips -> feature set
`balance` (balance_keep and the partial versions) and reports/balance.json."""
from __future__ import annotations

from megatron_video.cli.post_curation import run_pass

DEFAULT_RECIPE = "default"
SHORTHANDS = {"root": "balance.root"}


def run(cfg) -> int:
    from curator.balance.run import run_balance

    return run_pass("balance", lambda: run_balance(cfg.balance))
