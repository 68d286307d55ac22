"""The GPU curation path on real and awkward inputs (the GPU curation issue): every sample video the
CPU path curates, the NVDEC path curates too, cut at the same frames; a directory of formats NVDEC
cannot take, mixed with corrupt and truncated files, curates to the end, twice. Run on the GPU
machine by scripts/gpu_check.sh."""
import os
import pathlib
import subprocess
import sys

import av
import numpy as np
import pytest
import yaml

from curator.config import CurateConfig
from curator.ledger import Ledger
from curator.run import curate

pytestmark = pytest.mark.gpu
ROOT = pathlib.Path(__file__).resolve().parents[2]


def gpu_node(inputs: pathlib.Path, output: pathlib.Path, **overrides) -> CurateConfig:
    fields = yaml.safe_load((ROOT / "recipes" / "curate" / "gpu_node.yaml").read_text())
    return CurateConfig(input=str(inputs), output=str(output), **{**fields, **overrides})


def clip_ranges(ledger_path: str) -> dict[str, list[tuple[int, int]]]:
    ledger = Ledger(ledger_path)
    rows = ledger._db.execute("SELECT source, start_frame, end_frame FROM clips ORDER BY source, start_frame")
    ranges: dict[str, list[tuple[int, int]]] = {}
    for source, start, end in rows.fetchall():
        ranges.setdefault(pathlib.Path(source).name, []).append((start, end))
    ledger.close()
    return ranges


def test_the_gpu_path_curates_every_sample_the_cpu_path_does(footage, tmp_path):
    cpu = curate(gpu_node(footage, tmp_path / "cpu", device="cpu"), progress=False)
    gpu = curate(gpu_node(footage, tmp_path / "gpu"), progress=False)
    cpu_clips, gpu_clips = clip_ranges(cpu.ledger_path), clip_ranges(gpu.ledger_path)
    assert cpu_clips, "the CPU path gave no clips"
    assert gpu.inputs_by_status == cpu.inputs_by_status
    for name, ranges in cpu_clips.items():
        assert len(gpu_clips.get(name, [])) == len(ranges), (name, ranges, gpu_clips.get(name))
        for (start, end), (gpu_start, gpu_end) in zip(ranges, gpu_clips[name], strict=True):
            assert abs(start - gpu_start) <= 2 and abs(end - gpu_end) <= 2, (name, ranges, gpu_clips[name])
    rows = {pathlib.Path(r["source"]).name: r for r in Ledger(gpu.ledger_path).inputs()}
    # MPEG-4 part 2 and MS-MPEG4 in AVI decode on the CPU, with the reason; H.264 in MP4 on NVDEC.
    assert rows["vtest.avi"]["decoder"] == rows["Megamind.avi"]["decoder"] == "pyav"
    assert "decoded on the CPU" in rows["vtest.avi"]["notes"]
    assert rows["box.mp4"]["decoder"] == rows["cup.mp4"]["decoder"] == "nvdec"


def megamind_frames(footage: pathlib.Path, count: int) -> np.ndarray:
    with av.open(str(footage / "Megamind.avi")) as container:
        frames = [f.to_ndarray(format="rgb24", width=640, height=360) for _, f in
                  zip(range(count), container.decode(video=0))]
    return np.stack(frames)


def test_a_directory_of_mixed_formats_curates_to_the_end_twice(footage, format_zoo, tmp_path):
    inputs = tmp_path / "zoo"
    # Megamind's first shot (99 frames, 4.1 s at 24 fps) and part of the next; the truncated copy
    # keeps about 100 frames, so its first shot is still long enough for a clip.
    refusals = format_zoo(inputs, megamind_frames(footage, 120))
    names = sorted(p.name for p in inputs.iterdir())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    for attempt in range(2):
        result = subprocess.run([sys.executable, "-m", "megatron_video.cli.main", "curate", f"input={inputs}",
                                 f"output={tmp_path / 'out'}", "curate=gpu_node", "run.progress=false"],
                                capture_output=True, text=True, timeout=600, env=env, cwd=ROOT, check=False)
        assert result.returncode == 0, (attempt, result.stderr[-3000:])
    rows = {pathlib.Path(r["source"]).name: r for r in Ledger(str(tmp_path / "out" / "ledger.sqlite")).inputs()}
    assert sorted(rows) == names
    video_files = [n for n in names if n not in ("corrupt.mp4", "empty.mp4")]
    assert all(rows[n]["status"] == "done" for n in video_files), {n: (rows[n]["status"], rows[n]["reason"])
                                                                  for n in video_files}
    assert rows["corrupt.mp4"]["status"] == "failed" and rows["empty.mp4"]["status"] == "skipped"
    assert "stream ends after" in rows["truncated.mkv"]["notes"]
    for name, refusal in refusals.items():
        assert rows[name]["decoder"] == ("pyav" if refusal else "nvdec"), (name, rows[name]["notes"])
