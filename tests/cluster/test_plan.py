"""`mvideo plan`'s model against the real VideoDiT: parameter counts exactly, activations against the
bytes autograd actually saves (a saved-tensors hook over a CPU forward), with the block ops' PyTorch
references and with their fused kernels (interpreted), and the recipes' layouts."""
from __future__ import annotations

import dataclasses
import importlib
import os

import pytest
import torch

import megatron_video.model.block as dit_block
from kernels import reference
from megatron_video.model import VideoDiTConfig, block_ops, build_model, load_preset
from megatron_video.parallel.state import ParallelConfig
from megatron_video.plan.measure import measure_training_step
from megatron_video.plan.memory import Layout, Workload, plan_memory
from megatron_video.plan.parameters import block_parameters, total_parameters
from megatron_video.testing.distributed import run_distributed

# Triton runs kernels on CPU tensors only interpreted (tests/conftest.py sets it where no GPU is visible).
KERNELS_RUN_ON_CPU = os.environ.get("TRITON_INTERPRET") == "1"

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
    # The CPU kernel `auto` picks; off CUDA the block ops run the references (fused_kernels off).
    cfg = load_preset(name, block=block, attention_backend="flash", fused_kernels=False)
    measured = measure_training_step(cfg, batch, latent, text_len, torch.device("cpu"), torch.float32)
    grid = [n // p for n, p in zip(latent, cfg.patch)]
    work = Workload(video_tokens=grid[0] * grid[1] * grid[2], text_tokens=text_len)
    plan = plan_memory(cfg, work, Layout(micro_batch=batch, precision="fp32"), built=set())
    assert plan.activations == measured.saved_activations


def saved_activations_under_tensor_parallelism(preset: str, batch: int, latent: tuple[int, int, int],
                                               text_len: int, cases: list[tuple[bool, bool]]
                                               ) -> dict[tuple[bool, bool], int]:
    """On each of 2 TP ranks: bytes saved by a training step for each (fused, sp) of `cases`: without
    and with sequence parallelism, with the block ops' references and (fused) their kernels."""
    saved = {}
    for fused, sp in cases:
        if fused:  # this spawned rank's own module: nothing to restore
            dit_block.block_op = fused_ops_on_any_device
        cfg = load_preset(preset, attention_backend="flash", fused_kernels=fused)
        saved[fused, sp] = measure_training_step(cfg, batch, latent, text_len, torch.device("cpu"), torch.float32,
                                                 ParallelConfig(tensor=2, sequence_parallel=sp)).saved_activations
    return saved


def test_activation_estimate_per_rank_under_tensor_and_sequence_parallelism():
    """2 gloo ranks, TP=2: heads and MLP split, and with SP the residual-stream tensors too; block ops
    as references and (where Triton interprets) as kernels."""
    batch, latent, text_len = 2, (8, 8, 14), 32  # S = 256: no sequence padding
    # Fused under SP only (the kernels interpreted are slow): what differs from the references there is
    # the stream's rows and block 0's view of the whole sequence; the TP split is the same division.
    cases = [(False, False), (False, True)] + [(True, True)] * KERNELS_RUN_ON_CPU
    ranks = run_distributed(saved_activations_under_tensor_parallelism, 2, "demo", batch, latent, text_len,
                            cases, parallel=ParallelConfig(tensor=2))
    work = Workload(video_tokens=8 * 4 * 7, text_tokens=text_len)
    for fused, sp in cases:
        layout = Layout(tensor=2, sequence_parallel=sp, micro_batch=batch, precision="fp32")
        estimate = plan_memory(load_preset("demo", fused_kernels=fused), work, layout, built=set()).activations
        assert [rank[fused, sp] for rank in ranks] == [estimate] * 2, (fused, sp)


def fused_ops_on_any_device(name: str, fused: bool, first: torch.Tensor, *args):
    """block_ops.call (block.py's block_op) without its CUDA check: with `fused`, kernels/' autograd
    Functions run on CPU tensors (the kernels interpreted), saving for backward what they save on GPU."""
    module = importlib.import_module(block_ops.KERNEL_MODULES[name]) if fused else reference
    return getattr(module, name)(first, *args)


@pytest.mark.skipif(not KERNELS_RUN_ON_CPU, reason="Triton takes CPU tensors only interpreted")
@pytest.mark.parametrize("block", ["parallel", "sequential"])
def test_fused_activation_estimate_equals_saved_tensors_of_the_fused_block_ops(megatron_cpu, monkeypatch, block):
    """model.fused_kernels' path (every block op of kernels/, value_mix from layer 1 on) in fp32: the
    estimate follows what the kernels' Functions save, to the byte, and is below the references'."""
    monkeypatch.setattr(dit_block, "block_op", fused_ops_on_any_device)
    cfg = VideoDiTConfig(hidden=64, layers=3, heads=4, in_channels=12, patch=[2, 2, 2], text_dim=32, block=block,
                         attention_backend="flash", fused_kernels=True)
    batch, latent, text_len = 2, (2, 8, 8), 8
    measured = measure_training_step(cfg, batch, latent, text_len, torch.device("cpu"), torch.float32)
    work = Workload(video_tokens=16, text_tokens=text_len)
    layout = Layout(micro_batch=batch, precision="fp32")
    plan = plan_memory(cfg, work, layout, built=set())
    assert plan.activations == measured.saved_activations
    references = dataclasses.replace(cfg, fused_kernels=False)
    assert plan.activations < plan_memory(references, work, layout, built=set()).activations
