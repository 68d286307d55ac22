"""The planner against measured memory: the benchmark's CPU part here, its GPU run (two presets,
peak within 15%) on the GPU machine."""
from __future__ import annotations

import json

import pytest


def test_quick_benchmark_activations_equal_the_estimate(load_benchmark, megatron_cpu, tmp_path):
    record = json.loads(load_benchmark("plan_memory").main(["--quick", "--results-dir", str(tmp_path)]).read_text())
    [case] = record["metrics"]["cases"]
    assert record["name"] == "plan_memory" and record["target"].startswith("relative error <= 0.15")
    assert case["saved_activations_gib"] == case["estimated_activations_gib"] > 0
    assert record["ratio"] == 0.0


@pytest.mark.gpu
def test_estimated_peak_within_15_percent_of_two_measured_presets(load_benchmark, tmp_path):
    record = json.loads(load_benchmark("plan_memory").main(["--results-dir", str(tmp_path)]).read_text())
    cases = record["metrics"]["cases"]
    assert [c["preset"] for c in cases] == ["1b", "100m"]
    for case in cases:
        assert abs(case["relative_error"]) <= 0.15, case
