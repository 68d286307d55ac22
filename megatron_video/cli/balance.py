"""`mvideo balance root=DIR`: man/woman and vocabulary balancing of the captioned clips -> feature set
`balance` (balance_keep and the partial versions) and reports/balance.json."""
from __future__ import annotations

from megatron_video.config import ConfigError

DEFAULT_RECIPE = "default"


def run(cfg) -> int:
    from curator.balance.run import run_balance

    try:
        run_balance(cfg.balance)
    except ConfigError as err:
        raise err.under("balance") from None
    return 0
