"""The GPU benchmarks run end to end on CPU (--quick) and write well-formed results."""
import json

import pytest


@pytest.mark.parametrize("name", ["dit_step", "block_parallel_vs_sequential"])
def test_quick_run_writes_result(load_benchmark, megatron_single, tmp_path, name):
    path = load_benchmark(name).main(["--quick", "--results-dir", str(tmp_path)])
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


def test_dit_step_reports_mfu_by_the_formula_and_by_torch_flop_counter(load_benchmark, megatron_single, tmp_path):
    record = json.loads(load_benchmark("dit_step").main(["--quick", "--results-dir", str(tmp_path), "--fp8", "native",
                                               "--recompute", "attention"]).read_text())
    counted = record["metrics"]["flop_counter"]
    assert counted["flops_per_step"] > 0 and counted["tflops"] > 0
    assert record["metrics"]["fp8"] == "native" and record["metrics"]["fp8_scaling"] == "tensor"


def test_fp8_vs_bf16_quick_run_times_every_variant_and_checks_loss_parity(load_benchmark, megatron_single, tmp_path,
                                                                          shard_root):
    from megatron_video.parallel.state import destroy_distributed

    try:
        path = load_benchmark("fp8_vs_bf16").main(["--quick", "--results-dir", str(tmp_path),
                                                   "--shards", str(shard_root)])
    finally:
        destroy_distributed()
    record = json.loads(path.read_text())
    rows = record["metrics"]["throughput"]["tiny"]
    assert {"bf16", "native_tensor", "native_delayed", "native_row"} <= set(rows) and rows["bf16"]["speedup"] == 1.0
    assert all("step_s" in rows[name] for name in ("native_tensor", "native_delayed", "native_row")), rows
    assert record["metrics"]["best_bf16"] == "bf16"  # no compiled variants on the CPU
    assert record["ratio"] == pytest.approx(rows["bf16"]["step_s"] / record["metrics"]["fp8_step_s"], rel=1e-3)
    parity = record["metrics"]["loss_parity"]
    assert set(parity["final_loss"]) == {"bf16", "fp8", "bf16_seed1"}
    assert all(loss > 0 for loss in parity["final_loss"].values())


def test_recompute_trade_quick_run_times_every_setting(load_benchmark, megatron_single, tmp_path):
    record = json.loads(load_benchmark("recompute_trade").main(["--quick", "--results-dir", str(tmp_path)]).read_text())
    settings = record["metrics"]["settings"]
    assert list(settings) == ["none", "attention", "mlp", "block"]
    assert all(row["step_s"] > 0 for row in settings.values()) and settings["none"]["time_vs_none"] == 1.0
