"""benchmarks/loader_throughput.py --quick on the CPU: DALI's CPU pipeline and the CPU loader read
the same VP9 shards into the same training contract, and the result records both and the ratio."""
import json


def test_loader_throughput_quick_run(load_benchmark, tmp_path):
    bench = load_benchmark("loader_throughput")
    record = json.loads(bench.main(["--quick", "--results-dir", str(tmp_path)]).read_text())
    dali, cpu = record["metrics"]["dali"], record["baseline"]["cpu_loader"]
    assert record["metrics"]["dali_decode"] == "cpu" and dali["batch_shape"] == cpu["batch_shape"] == [4, 3, 8, 64, 112]
    assert dali["clips_per_s"] > 0 and cpu["clips_per_s"] > 0
    consumed = record["baseline"]["training_consumption"]
    assert consumed["source"].startswith("stated")
    assert record["ratio"] == round(dali["clips_per_s"] / consumed["clips_per_s"], 4)
