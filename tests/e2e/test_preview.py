"""`mvideo preview`: a grid video of sampled clips, each tile showing the clip the sidecar names."""
import io
import json

import av
import numpy as np

from megatron_video.cli.main import main
from megatron_video.data.catalog import load_catalog
from megatron_video.data.shard_members import ShardMembers
from megatron_video.viewer.preview import fit_size


def _frames(source) -> np.ndarray:
    with av.open(source) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def test_a_curated_grid_preview_shows_the_requested_grid(demo_run, tmp_path, capsys):
    _, curated = demo_run
    output = tmp_path / "grid.mp4"
    assert main(["preview", f"root={curated}", "filter=duration_s >= 4", "rows=2", "cols=3", "seconds=1",
                 "preview.fps=6", "preview.tile_height=64", "preview.tile_width=112", f"output={output}",
                 "seed=3", f"run.output_dir={tmp_path}"]) == 0
    assert str(output) in capsys.readouterr().out
    grid = _frames(str(output))
    assert grid.shape == (6, 2 * 64, 3 * 112, 3)
    layout = json.loads(output.with_suffix(".json").read_text())
    assert [(t["row"], t["col"]) for t in layout["tiles"]] == [(r, c) for r in range(2) for c in range(3)]
    keys = [t["source"] for t in layout["tiles"]]
    assert len(set(keys)) == 6, "six distinct clips should fill six tiles"
    catalog = load_catalog(curated).set_index("key")
    assert (catalog.loc[keys, "duration_s"] >= 4).all(), "the preview samples what data.filter selects"

    shard_of = catalog["shard_path"]
    members = ShardMembers()
    firsts = {k: _frames(io.BytesIO(members.read(shard_of[k], f"{k}.mp4")))[0].astype(float) for k in keys}
    for tile in layout["tiles"]:
        crop = grid[0, tile["row"] * 64:(tile["row"] + 1) * 64, tile["col"] * 112:(tile["col"] + 1) * 112]
        errors = {k: np.abs(crop - first).mean() for k, first in firsts.items()}
        assert errors[tile["source"]] < 8, errors
        assert min(errors, key=errors.get) == tile["source"], "each tile shows the clip the sidecar names"


def test_a_raw_grid_preview_letterboxes_the_inputs(footage, tmp_path):
    output = tmp_path / "raw.mp4"
    assert main(["preview", "source=raw", f"input={footage}", "rows=1", "cols=2", "seconds=0.5",
                 "preview.fps=4", "preview.tile_height=72", "preview.tile_width=128", f"output={output}",
                 f"run.output_dir={tmp_path}"]) == 0
    grid = _frames(str(output))
    assert grid.shape == (2, 72, 256, 3)
    for tile in json.loads(output.with_suffix(".json").read_text())["tiles"]:
        with av.open(tile["source"]) as container:
            stream = container.streams.video[0]
            height, width = fit_size(stream.height, stream.width, 72, 128)
        image = grid[0, :, tile["col"] * 128:(tile["col"] + 1) * 128].astype(float)
        top, left = (72 - height) // 2, (128 - width) // 2
        inside = image[top + 2:top + height - 2, left + 2:left + width - 2]
        assert inside.std() > 5, f"tile {tile} should show picture content"
        if left >= 4:  # letterboxed sideways: the bars are black
            assert image[:, :left - 2].max() < 24 and image[:, left + width + 2:].max() < 24
