"""benchmarks/sample_latency.py end to end on CPU (--quick): sampling and the served load write a result."""
import importlib.util
import json
import pathlib

BENCHMARK = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "sample_latency.py"


def test_sample_latency_quick_run_writes_result(megatron_single, tmp_path):
    spec = importlib.util.spec_from_file_location("_bench_sample_latency", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    record = json.loads(module.main(["--quick", "--results-dir", str(tmp_path)]).read_text())
    metrics = record["metrics"]
    assert record["name"] == "sample_latency" and record["target"]
    assert metrics["sample_s"] > 0 and record["baseline"]["bare_forwards_s"] > 0
    assert metrics["server_requests"] == 6 and 0 < metrics["server_p50_s"] <= metrics["server_p99_s"]
