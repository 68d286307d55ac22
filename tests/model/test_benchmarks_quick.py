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
        # the counter saw attention too (counted on the math kernel: backward 2x, as the formula)
        assert record["metrics"]["flop_counter"]["flops_per_step"] == pytest.approx(
            record["metrics"]["flops_per_step"], rel=1e-2)
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
                                                   "--shards", str(shard_root), "--parity-seeds", "2"])
    finally:
        destroy_distributed()
    record = json.loads(path.read_text())
    rows = record["metrics"]["throughput"]["tiny"]
    assert {"bf16", "native_tensor", "native_delayed", "native_row"} <= set(rows) and rows["bf16"]["speedup"] == 1.0
    assert all("step_s" in rows[name] for name in ("native_tensor", "native_delayed", "native_row")), rows
    assert record["baseline"]["bf16_step_s"] == rows["bf16"]["step_s"]
    # write_result rounds the ratio to 4 decimals: on a busy CPU FP8 runs ~100x slower, ratio ~0.008
    measured = rows["bf16"]["step_s"] / record["metrics"]["fp8_step_s"]
    assert record["ratio"] == pytest.approx(measured, rel=1e-3, abs=5e-5)
    parity = record["metrics"]["loss_parity"]
    assert parity["seeds"] == 2 and {k: len(v) for k, v in parity["final_loss"].items()} == {"bf16": 2, "fp8": 2}
    assert all(loss > 0 for values in parity["final_loss"].values() for loss in values)
    assert parity["at_parity"] == (parity["fp8_gap"] <= parity["tolerance"]) and parity["tolerance"] >= 0.005
    assert not (tmp_path / "fp8_vs_bf16.json.partial").exists()  # the rows so far, gone once the result is in


def test_recompute_trade_quick_run_times_every_setting(load_benchmark, megatron_single, tmp_path):
    record = json.loads(load_benchmark("recompute_trade").main(["--quick", "--results-dir", str(tmp_path)]).read_text())
    settings = record["metrics"]["settings"]
    assert list(settings) == ["none", "attention", "mlp", "block"]
    assert all(row["step_s"] > 0 for row in settings.values()) and settings["none"]["time_vs_none"] == 1.0


def wan_training_flops(config: dict, tokens: int, text_len: int) -> float:
    """Matmul FLOPs of a training step of a Wan transformer (diffusers' WanTransformer3DModel):
    3 x the forward's, less the input gradients of the layers fed by the inputs (no gradient)."""
    d, f, layers = config["num_attention_heads"] * config["attention_head_dim"], config["ffn_dim"], config["num_layers"]
    patch = config["in_channels"] * 4  # 1x2x2 patches
    # patch embedding, first layers of the timestep and text MLPs
    on_inputs = 2 * tokens * patch * d + 2 * config["freq_dim"] * d + 2 * text_len * config["text_dim"] * d
    forward = on_inputs + 2 * tokens * d * patch  # ... and the output projection
    forward += 2 * d * d + 2 * d * 6 * d  # timestep MLP's second layer and its projection to modulations
    forward += 2 * text_len * d * d  # text MLP's second layer
    block = 4 * 2 * tokens * d * d + 4 * tokens * tokens * d  # self-attention
    block += 2 * 2 * tokens * d * d + 2 * 2 * text_len * d * d + 4 * tokens * text_len * d  # cross-attention
    block += 2 * 2 * tokens * d * f  # FFN
    return 3.0 * (forward + layers * block) - on_inputs


def test_peer_dit_quick_run_counts_both_models_with_one_counter_and_times_each_backend(load_benchmark,
                                                                                        megatron_single, tmp_path):
    from megatron_video.model import load_preset, model_flops

    bench = load_benchmark("peer_dit")
    record = json.loads(bench.main(["--quick", "--results-dir", str(tmp_path)]).read_text())
    metrics, peer = record["metrics"], record["baseline"]
    assert metrics["video_tokens"] == 4 * 4 * 7 and metrics["text_tokens"] == 32
    # The counter (attention on the math kernel: backward = 2 x forward, as the project's formula)
    # counted every matmul of both steps.
    ours_flops = model_flops(load_preset("demo"), (48, 4, 8, 14), 32)
    assert metrics["ours"]["flops_per_step"] == pytest.approx(ours_flops, rel=1e-2)
    assert peer["flops_per_step"] == wan_training_flops(bench.TINY_WAN, 112, 32)
    assert set(peer["variants"]) == set(bench.PEER_BACKENDS["cpu"])
    for side in (metrics["ours"], peer):
        for row in side["variants"].values():
            assert row["step_s"] > 0 and row["tflops"] == pytest.approx(side["flops_per_step"] / row["step_s"] / 1e12,
                                                                        rel=1e-3)
    best = [side["variants"][side["best"]]["tflops"] for side in (metrics["ours"], peer)]
    assert [metrics["tflops"], peer["tflops"]] == best  # the headline pair, flat for BENCHMARKS.md
    assert record["ratio"] == pytest.approx(best[0] / best[1], rel=1e-3)
    assert [p["video_tokens"] for p in metrics["sweep"]] == [2 * 2 * 4]
