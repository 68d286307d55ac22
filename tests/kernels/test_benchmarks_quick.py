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
        assert metrics["copy_TBps"] > 0
        # The least bytes each op moves, at the quick sizes (37 tokens, hidden 48, 4 heads, MLP 80, fp32).
        hidden, mlp = 37 * 48 * 4, 37 * 80 * 4
        silu = metrics["ops"]["silu_gate"]
        assert (silu["min_bytes_fwd"], silu["min_bytes_fwd_bwd"]) == (3 * mlp, 8 * mlp)  # g, u -> m; dm, g, u -> dg, du
        concat = metrics["ops"]["concat_silu_gate"]  # + a read and written; its gradient a view of the output's
        assert (concat["min_bytes_fwd"], concat["min_bytes_fwd_bwd"]) == (2 * hidden + 3 * mlp, 2 * hidden + 8 * mlp)
        residual = metrics["ops"]["gated_residual"]  # x, gate, y -> out; dout, gate, y -> dy, dgate (dx is dout)
        assert residual["min_bytes_fwd_bwd"] == (3 * hidden + 48 * 4) + (3 * hidden + 2 * 48 * 4)
        assert all(row["fused_grad_rel_err_vs_eager"] < 1e-5 and "fused_fwd_bwd_copy_fraction" in row
                   for row in metrics["ops"].values())
