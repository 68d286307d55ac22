"""The planner against measured memory: the benchmark's CPU part here, its GPU run (two presets,
peak within 15%) on the GPU machine."""
from __future__ import annotations

import importlib.util
import json
import pathlib

import pytest

BENCHMARK = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "plan_memory.py"


def run_benchmark(*argv: str) -> dict:
    spec = importlib.util.spec_from_file_location("_bench_plan_memory", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return json.loads(module.main(list(argv)).read_text())


def test_quick_benchmark_activations_equal_the_estimate(megatron_cpu, tmp_path):
    record = run_benchmark("--quick", "--results-dir", str(tmp_path))
    [case] = record["metrics"]["cases"]
    assert record["name"] == "plan_memory" and record["target"].startswith("relative error <= 0.15")
    assert case["saved_activations_gib"] == case["estimated_activations_gib"] > 0
    assert record["ratio"] == 0.0


@pytest.mark.gpu
def test_estimated_peak_within_15_percent_of_two_measured_presets(tmp_path):
    record = run_benchmark("--results-dir", str(tmp_path))
    cases = record["metrics"]["cases"]
    assert [c["preset"] for c in cases] == ["1b", "100m"]
    for case in cases:
        assert abs(case["relative_error"]) <= 0.15, case
