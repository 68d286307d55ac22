"""benchmarks/sample_latency.py end to end on CPU (--quick): sampling and the served load write a result."""
import json


def test_sample_latency_quick_run_writes_result(load_benchmark, megatron_single, tmp_path):
    record = json.loads(load_benchmark("sample_latency").main(["--quick", "--results-dir", str(tmp_path)]).read_text())
    metrics = record["metrics"]
    assert record["name"] == "sample_latency" and record["target"]
    assert metrics["sample_s"] > 0 and record["baseline"]["bare_forwards_s"] > 0
    assert metrics["server_requests"] == 6 and 0 < metrics["server_p50_s"] <= metrics["server_p99_s"]
