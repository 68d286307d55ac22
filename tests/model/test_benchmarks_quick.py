"""The GPU benchmarks run end to end on CPU (--quick) and write well-formed results."""
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


@pytest.mark.parametrize("name", ["dit_step", "block_parallel_vs_sequential"])
def test_quick_run_writes_result(megatron_single, tmp_path, name):
    path = load(name).main(["--quick", "--results-dir", str(tmp_path)])
    record = json.loads(path.read_text())
    assert path == tmp_path / f"{name}.json" and record["name"] == name
    assert record["target"] is not None
    if name == "dit_step":  # a CPU has no bf16 peak to compare with: MFU (the ratio) is reported as 0
        assert record["metrics"]["tflops"] > 0 and record["metrics"]["video_tokens"] == 4 * 4 * 7
        assert record["ratio"] == record["metrics"]["mfu"] == 0.0
    else:
        assert record["metrics"]["parallel_s"] > 0 and record["baseline"]["sequential_s"] > 0
        assert record["ratio"] == pytest.approx(record["baseline"]["sequential_s"] / record["metrics"]["parallel_s"],
                                                rel=1e-2)
