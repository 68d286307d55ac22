"""`mvideo view [root=DIR] [filter=EXPR] [version=NAME] [port=8765]`: the dataset on a localhost web
page: clips that play on hover, captions, scores, a filter box, histograms and the curation ledger."""
from __future__ import annotations

import logging
import pathlib

from megatron_video.config import ConfigError
from megatron_video.config.schema import RootConfig

DEFAULT_RECIPE = "demo"
SHORTHANDS = {"root": "data.shards", "filter": "data.filter", "version": "data.version",
              "host": "view.host", "port": "view.port"}
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def run(cfg: RootConfig) -> int:
    from megatron_video.data.catalog import has_catalog
    from megatron_video.data.selection import selected_catalog
    from megatron_video.viewer.app import create_app, serve

    root = cfg.data.shards
    if not pathlib.Path(root).is_dir() or not has_catalog(root):
        raise ConfigError("data.shards", f"'{root}' is not a curated output dir (no catalog/ in it)")
    selected_catalog(root, cfg.data.filter, cfg.data.version)  # a bad filter or version fails here, not on the page
    if cfg.view.host not in LOCAL_HOSTS:
        logging.getLogger("mvideo").warning("view.host=%s: the viewer is reachable from other machines",
                                            cfg.view.host)
    print(f"viewing {root} at http://{cfg.view.host}:{cfg.view.port}/ (read-only; Ctrl-C stops)", flush=True)
    serve(create_app(root, cfg.data.filter, cfg.data.version, cfg.data.val_fraction, cfg.view.page_size),
          cfg.view.host, cfg.view.port)
    return 0
