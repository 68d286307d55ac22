"""Grid-preview videos: rows x cols tiles of sampled clips playing side by side, as one mp4.

Curated clips come out of their shards (the catalog rows `data.version` and `data.filter` select,
so a preview shows what a run would train on); raw inputs are sampled at a random start each.
Every tile is letterboxed into tile_height x tile_width and retimed to the preview's frame rate;
a clip shorter than the preview loops. A JSON file beside the mp4 says which clip each tile shows.
"""
from __future__ import annotations

import io
import json
import pathlib
from dataclasses import asdict, dataclass

import av
import numpy as np

from megatron_video.config import ConfigError
from megatron_video.config.schema import RootConfig
from megatron_video.inference.video_io import write_mp4


@dataclass
class Tile:
    row: int
    col: int
    source: str  # the clip key (curated) or the input video (raw)
    start_s: float


def fit_size(height: int, width: int, tile_height: int, tile_width: int) -> tuple[int, int]:
    """The largest even (height, width) with the source's aspect ratio inside the tile."""
    scale = min(tile_height / height, tile_width / width)
    return max(2, int(height * scale) // 2 * 2), max(2, int(width * scale) // 2 * 2)


def decode_tile(source: str | io.BytesIO, start_s: float, frames: int, fps: float,
                tile_height: int, tile_width: int) -> np.ndarray:
    """`frames` frames at `fps` from `start_s`, letterboxed to uint8 [frames, tile_height, tile_width, 3]:
    the frame shown at each output time is the last one whose timestamp is not after it."""
    picked: list[av.VideoFrame] = []
    with av.open(source) as container:
        stream = container.streams.video[0]
        height, width = fit_size(stream.height, stream.width, tile_height, tile_width)
        if start_s > 0:
            container.seek(int(start_s * av.time_base))
        rate = float(stream.average_rate or 24)
        previous = None
        for index, frame in enumerate(container.decode(stream)):
            time = frame.time if frame.time is not None else index / rate
            # Output times before this frame's show the frame before it.
            while previous is not None and len(picked) < frames and start_s + len(picked) / fps < time - 1e-4:
                picked.append(previous)
            if len(picked) == frames:
                break
            previous = frame
        else:
            if previous is not None:
                picked.append(previous)
        images = {id(f): f.reformat(width=width, height=height, format="rgb24").to_ndarray() for f in picked}
    if not picked:
        raise ValueError("no decodable frames")
    tile = np.zeros((frames, tile_height, tile_width, 3), np.uint8)
    top, left = (tile_height - height) // 2, (tile_width - width) // 2
    for index in range(frames):
        tile[index, top:top + height, left:left + width] = images[id(picked[index % len(picked)])]  # short clips loop
    return tile


def assemble_grid(tiles: list[np.ndarray], rows: int, cols: int) -> np.ndarray:
    """Tiles [frames, h, w, 3] in row-major order -> frames [frames, rows * h, cols * w, 3]."""
    frames, height, width, _ = tiles[0].shape
    grid = np.zeros((frames, rows * height, cols * width, 3), np.uint8)
    for index, tile in enumerate(tiles):
        row, col = divmod(index, cols)
        grid[:, row * height:(row + 1) * height, col * width:(col + 1) * width] = tile
    return grid


def _curated_sources(cfg: RootConfig, root: str, count: int, rng: np.random.Generator) -> list[tuple]:
    from megatron_video.data.selection import selected_catalog
    from megatron_video.data.shard_members import ShardMembers

    rows = selected_catalog(root, cfg.data.filter, cfg.data.version)
    if not len(rows):
        raise ConfigError("data.filter", f"selects no clip of {root} to preview")
    members = ShardMembers()
    order = rng.permutation(len(rows))
    picks = [rows.iloc[order[i % len(rows)]] for i in range(count)]
    return [(row["key"], io.BytesIO(members.read(row["shard_path"], f"{row['key']}.mp4")), 0.0) for row in picks]


def _raw_sources(cfg: RootConfig, folder: str, count: int, rng: np.random.Generator) -> list[tuple]:
    from curator import storage

    videos = storage.list_videos(folder, cfg.curate.extensions) if storage.exists(folder) else []
    if not videos:
        raise ConfigError("preview.input", f"no videos under '{folder}'")
    order = rng.permutation(len(videos))
    sources = []
    for index in range(count):
        video = videos[order[index % len(videos)]]
        with av.open(storage.open_for_decode(video)) as container:
            duration = (container.duration or 0) / av.time_base
        start = float(rng.uniform(0, max(duration - cfg.preview.seconds, 0.0)))
        sources.append((video, storage.open_for_decode(video), round(start, 3)))
    return sources


def write_preview(cfg: RootConfig) -> pathlib.Path:
    """Write the grid preview `cfg.preview` asks for; returns the mp4's path."""
    preview = cfg.preview
    curated = preview.source == "curated"
    folder = preview.input or (cfg.data.shards if curated else cfg.curate.input)
    if not folder:
        raise ConfigError("preview.input", f"no {preview.source} folder: set preview.input")
    output = pathlib.Path(preview.output or pathlib.Path(cfg.run.output_dir) / f"preview_{preview.source}.mp4")
    count = preview.rows * preview.cols
    rng = np.random.default_rng(preview.seed)
    sources = (_curated_sources if curated else _raw_sources)(cfg, folder, count, rng)
    frames = max(1, round(preview.seconds * preview.fps))
    tiles, placed = [], []
    for index, (name, source, start) in enumerate(sources):
        tiles.append(decode_tile(source, start, frames, preview.fps, preview.tile_height, preview.tile_width))
        placed.append(Tile(*divmod(index, preview.cols), name, start))
    write_mp4(assemble_grid(tiles, preview.rows, preview.cols), output, preview.fps)
    output.with_suffix(".json").write_text(json.dumps(
        {"source": preview.source, "input": folder, "rows": preview.rows, "cols": preview.cols,
         "tile_height": preview.tile_height, "tile_width": preview.tile_width, "fps": preview.fps,
         "frames": frames, "tiles": [asdict(t) for t in placed]}, indent=2) + "\n")
    return output
