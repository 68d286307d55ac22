"""`mvideo preview [source=curated|raw] [rows=3 cols=4] [output=FILE.mp4]`: a grid-preview video of
sampled clips (curated: data.shards narrowed by data.filter/version; raw: curate.input)."""
from __future__ import annotations

from megatron_video.config.schema import RootConfig

DEFAULT_RECIPE = "demo"
SHORTHANDS = {"root": "data.shards", "filter": "data.filter", "version": "data.version",
              **{key: f"preview.{key}" for key in ("source", "input", "output", "rows", "cols", "seconds", "seed")}}


def run(cfg: RootConfig) -> int:
    from megatron_video.viewer.preview import write_preview

    path = write_preview(cfg)
    print(path)
    return 0
