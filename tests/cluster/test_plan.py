"""`mvideo plan`'s model against the real VideoDiT: parameter counts exactly, activations against the
bytes autograd actually saves (a saved-tensors hook over a CPU forward), and the recipes' layouts."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from megatron_video.model import VideoDiTConfig, build_model, load_preset
from megatron_video.plan.measure import measure_training_step
from megatron_video.plan.memory import Layout, Workload, plan_memory
from megatron_video.plan.parameters import block_parameters, total_parameters

VARIANTS = {
    "demo": load_preset("demo"),
    "sequential": dataclasses.replace(load_preset("demo"), block="sequential"),
    "adaln_lora_no_value_residual": VideoDiTConfig(hidden=64, layers=3, heads=4, adaln_lora_rank=8,
                                                   value_residual=False, in_channels=12, patch=[2, 2, 2]),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_parameter_count_equals_the_built_model(megatron_cpu, name):
    cfg = VARIANTS[name]
    model = build_model(cfg)
    assert total_parameters(cfg) == sum(p.numel() for p in model.parameters())
    # The parameters the planner splits over TP are exactly those the model's TP layout names.
    split = {n: p.numel() for n, p in model.named_parameters() if n in model.tensor_parallel_layout()}
    assert sum(block_parameters(cfg, i).split for i in range(cfg.layers)) == sum(split.values())


@pytest.mark.parametrize("name", ["22b", "7b"])
def test_parameter_count_of_the_large_presets_on_meta(megatron_cpu, name):
    cfg = load_preset(name)
    with torch.device("meta"):
        model = build_model(cfg)
    assert total_parameters(cfg) == sum(p.numel() for p in model.parameters())


# (preset, block, batch, latent (T, H, W), text tokens)
# (the demo preset's parallel block: tests/cluster/test_plan_gpu.py, through the benchmark)
CASES = [("30m", "parallel", 1, (2, 8, 16), 16),
         ("demo", "sequential", 1, (4, 8, 8), 16)]


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_activation_estimate_equals_saved_tensors_of_a_cpu_training_step(megatron_cpu, case):
    """fp32 on CPU (what CPU training runs), the trainer's step (DDP, SphereAdamW): the estimate
    names every tensor autograd saves, so it must match to the byte (tolerance 0)."""
    name, block, batch, latent, text_len = case
    cfg = load_preset(name, block=block, attention_backend="flash")  # the CPU kernel `auto` picks
    measured = measure_training_step(cfg, batch, latent, text_len, torch.device("cpu"), torch.float32)
    grid = [n // p for n, p in zip(latent, cfg.patch)]
    work = Workload(video_tokens=grid[0] * grid[1] * grid[2], text_tokens=text_len)
    plan = plan_memory(cfg, work, Layout(micro_batch=batch, precision="fp32"), built=set())
    assert plan.activations == measured.saved_activations
