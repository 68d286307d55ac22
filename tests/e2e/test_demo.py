"""`mvideo demo` end to end on the real sample footage (shortened training): every artefact the
README promises exists and holds real content."""
import json
import pathlib
import subprocess
import sys

import av
import pytest

from megatron_video.data.catalog import shard_index

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_demo_produces_clips_checkpoint_plots_sample_and_report(samples_dir, tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run(
        [str(pathlib.Path(sys.executable).parent / "mvideo"), "demo", f"run.output_dir={out}",
         f"curate.input={samples_dir}", "train.steps=60", "optim.warmup_steps=5", "train.val_every=30",
         "train.checkpoint_every=30", "run.progress=false"],
        capture_output=True, text=True, cwd=ROOT, timeout=900, check=False)
    assert result.returncode == 0, result.stderr[-3000:]

    catalog = shard_index(out / "curated")  # the shard index alone: catalog/features/ holds the filters' sets
    sources = {pathlib.Path(s).name for s in catalog["source"]}
    assert {"Megamind.avi", "vtest.avi", "music_video.mp4"} <= sources
    assert len(catalog) >= 20 and catalog["key"].is_unique
    assert sorted((out / "curated" / "shards").glob("shard-*.tar"))
    assert (out / "checkpoints" / "ckpt_0000060" / "metadata.json").exists()
    for plot in ("loss_curve.png", "dataset_grid.png", "sample_strip.png"):
        assert (out / plot).stat().st_size > 10_000

    sample = next((out / "samples").glob("*.mp4"))
    with av.open(str(sample)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 8 and frames[0].shape == (32, 56, 3)

    report = (out / "report.md").read_text()
    assert "Clips written" in report and "Megamind.avi" in report
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 60
    first = float(report.split("first 10% of steps: ")[1].split(";")[0])
    last = float(report.split("last 10%: ")[1].split(" ")[0])
    assert last < first, report
