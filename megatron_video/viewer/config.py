"""Configuration of `mvideo catalog`, `mvideo view` and `mvideo preview` (the dataset they read is
`data.shards`, narrowed by `data.version` and `data.filter`)."""
from __future__ import annotations

from dataclasses import dataclass, field

from megatron_video.config.errors import require


@dataclass
class CatalogConfig:
    action: str = "list"  # list | add | describe | version
    name: str = ""  # the feature set (add, describe) or dataset version (version, describe)
    file: str = ""  # add: a Parquet file with a `key` column and feature columns
    filter: str = ""  # version: its filter expression
    features: list = field(default_factory=list)  # version: the feature sets it reads; empty: all there now
    description: str = ""  # version: a line saying what it is for
    replace: bool = False  # add / version: replace one of the same name

    def __post_init__(self) -> None:
        require(self.action in ("list", "add", "describe", "version"), "action",
                "must be list, add, describe or version")
        require(self.action in ("list",) or bool(self.name), "name", f"is needed to {self.action}")
        require(self.action != "add" or bool(self.file), "file", "is needed to add a feature set")


@dataclass
class ViewConfig:
    host: str = "127.0.0.1"  # another address exposes the page beyond this machine: say so explicitly
    port: int = 8765
    page_size: int = 48  # clips per page

    def __post_init__(self) -> None:
        require(1 <= self.port <= 65535, "port", "must be in 1..65535")
        require(self.page_size >= 1, "page_size", "must be >= 1")


@dataclass
class PreviewConfig:
    source: str = "curated"  # curated (clips of data.shards, narrowed by data.filter/version) | raw
    input: str = ""  # empty: data.shards (curated) or curate.input (raw)
    output: str = ""  # empty: <run.output_dir>/preview_<source>.mp4
    rows: int = 3
    cols: int = 4
    tile_height: int = 144
    tile_width: int = 256
    seconds: float = 4.0
    fps: float = 12.0
    seed: int = 0  # which clips are sampled

    def __post_init__(self) -> None:
        require(self.source in ("curated", "raw"), "source", "must be curated or raw")
        for key in ("rows", "cols", "tile_height", "tile_width"):
            require(getattr(self, key) >= 1, key, "must be >= 1")
        for key in ("tile_height", "tile_width"):
            require(getattr(self, key) % 2 == 0, key, "must be even (H.264 4:2:0)")
        require(self.seconds > 0, "seconds", "must be > 0")
        require(self.fps > 0, "fps", "must be > 0")
