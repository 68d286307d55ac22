"""The kernel benchmarks run end to end on CPU (--quick: tiny sizes, kernels interpreted) and
write well-formed results; the optimizer benchmark's implementations agree after one step."""
import importlib.util
import json
import pathlib

import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parents[2] / "benchmarks"


def load(name):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["sphere_adamw_kernel", "block_kernels"])
def test_quick_run_writes_result(tmp_path, name):
    path = load(name).main(["--quick", "--results-dir", str(tmp_path)])
    record = json.loads(path.read_text())
    assert path == tmp_path / f"{name}.json" and record["name"] == name and record["target"]
    metrics = record["metrics"]
    if name == "sphere_adamw_kernel":
        assert metrics["params"] > metrics["sphere_params"] > 0 and metrics["fused_s"] > 0
        assert max(metrics["max_abs_diff_vs_reference"].values()) < 1e-5
    else:
        assert set(metrics["ops"]) == {"adaln_modulate", "rope_qk", "silu_gate", "concat_silu_gate",
                                       "gated_residual", "value_mix"}
        assert all(row["fused_fwd_bwd_ms"] > 0 and row["eager_fwd_bwd_ms"] > 0 for row in metrics["ops"].values())
