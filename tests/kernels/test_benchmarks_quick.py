"""The kernel benchmarks run end to end on CPU (--quick: tiny sizes, kernels interpreted) and
write well-formed results; the optimizer benchmark's implementations agree after one step."""
import json

import pytest


@pytest.mark.parametrize("name", ["sphere_adamw_kernel", "block_kernels"])
def test_quick_run_writes_result(load_benchmark, tmp_path, name):
    path = load_benchmark(name).main(["--quick", "--results-dir", str(tmp_path)])
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
