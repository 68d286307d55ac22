"""The multi-GPU benchmarks (cp_training_scaling, cp_sampling_speedup, layout_throughput) end to end
at their --tiny size on 2 gloo ranks: every layout row runs and each writes a valid results JSON.
One launch runs all three (the ranks carry the same environment torchrun gives them), so the
imports are paid once. On GPUs the same scripts run under torchrun (scripts/multi_gpu_check.sh)."""
import json
import pathlib
import sys

from megatron_video.testing.distributed import run_distributed

ROOT = pathlib.Path(__file__).resolve().parents[2]
KEYS = {"name", "device", "date", "commit", "command", "metrics", "baseline", "ratio", "target"}


def run_tiny_benchmarks(results_dir: str) -> list[str | None]:
    sys.path.insert(0, str(ROOT))
    from benchmarks import cp_sampling_speedup, cp_training_scaling, layout_throughput

    paths = []
    for module in (cp_training_scaling, cp_sampling_speedup, layout_throughput):
        path = module.main(["--tiny", "--steps", "2", "--results-dir", results_dir])
        paths.append(str(path) if path else None)
    return paths


def read(path: str, name: str) -> dict:
    record = json.loads(pathlib.Path(path).read_text())
    assert set(record) == KEYS and record["name"] == name and record["target"]
    return record


def test_multi_gpu_benchmarks_run_tiny_on_two_gloo_ranks(tmp_path):
    first, second = run_distributed(run_tiny_benchmarks, 2, str(tmp_path))
    assert second == [None, None, None]  # only rank 0 writes
    training, sampling, layouts = first

    record = read(training, "cp_training_scaling")
    rows = record["metrics"]["rows"]
    assert [(r["sequence"], r["context"], r["status"]) for r in rows] == [
        ("32k", 1, "ok"), ("32k", 2, "ok"), ("128k", 1, "ok"), ("128k", 2, "ok")]
    assert all(r["tflops_per_gpu"] > 0 and r["step_s"] > 0 for r in rows)
    assert rows[1]["context_mode"] == "ulysses" and rows[1]["data"] == 1 and rows[0]["data"] == 2
    assert record["metrics"]["efficiency"]["128k"]["base_cp"] == 1
    assert record["ratio"] == rows[3]["scaling_efficiency"] > 0 and record["metrics"]["headline_cp"] == 2

    record = read(sampling, "cp_sampling_speedup")
    rows = record["metrics"]["rows"]
    assert [(r["name"], r["gpus"], r["cfg_parallel"]) for r in rows] == [
        ("cp1", 1, False), ("cp2", 2, False), ("cp1_cfg2", 2, True)]
    # Float32: the CP split and the CFG pairs' exchange only reorder sums; a wrong pairing would not.
    assert all(r["max_latent_diff_vs_1gpu"] < 1e-4 for r in rows), rows
    assert record["ratio"] == max(r["speedup"] for r in rows[1:]) > 0

    record = read(layouts, "layout_throughput")
    rows = record["metrics"]["rows"]
    assert [(r["name"], r["status"]) for r in rows] == [("tp2_sp", "ok"), ("pp2_vpp2", "ok"), ("dp2_distopt", "ok")]
    assert [(r["tensor"], r["pipeline"], r["virtual_pipeline"], r["data"]) for r in rows] == [
        (2, 1, 1, 1), (1, 2, 2, 1), (1, 1, 1, 2)]
    assert all(r["tflops_per_gpu"] > 0 and r["planned_peak_gib"] > 0 for r in rows)
