"""SphereAdamW through megatron-core on a CUDA GPU (NCCL): the CPU run's numbers, unit rows in bf16."""
import pytest

from megatron_video.parallel.state import ParallelConfig
from megatron_video.testing.distributed import run_distributed


@pytest.mark.gpu
def test_cuda_run_matches_the_cpu_run_and_keeps_rows_on_the_sphere(megatron_cases, monkeypatch):
    weights, x, y = megatron_cases.problem()
    with monkeypatch.context() as env:  # the reference runs in a spawned process that sees no GPU
        env.setenv("CUDA_VISIBLE_DEVICES", "")
        (cpu,) = run_distributed(megatron_cases.single_process_cases, 1, weights, x, y,
                                 parallel=ParallelConfig())
    (cuda,) = run_distributed(megatron_cases.single_process_cases, 1, weights, x, y, "cuda",
                              parallel=ParallelConfig(), device="cuda")
    fp32, bf16 = cuda["fp32"], cuda["bf16"]
    assert max((fp32["weights"][k] - cpu["fp32"]["weights"][k]).abs().max().item() for k in weights) < 1e-4
    assert fp32["groups"] == cpu["fp32"]["groups"]
    for name in ("patch_embed.weight", "col.weight", "row.weight"):
        assert (bf16["main"][name].norm(dim=1) - 1).abs().max() < 1e-5
        assert (bf16["weights"][name] - weights[name]).abs().max() > 1e-2
