"""Sampling on a group of 2 gloo ranks equals one process: CFG parallel (conditional branch on rank 0,
negative on rank 1) and the server's group generator (rank 0 hands each request to the others)."""
import pytest
import torch
import torch.distributed as dist

from megatron_video.inference.generator import GenerationRequest, VideoGenerator, cfg_parallel_group
from megatron_video.inference.server.worker import GroupGenerator, follow_requests
from megatron_video.testing.distributed import requires_gpus, run_distributed
from megatron_video.testing.tiny import tiny_components

# Batched (2B) and split (B + B) forwards may round differently; guidance amplifies the difference by 1 + g.
LATENT_TOLERANCE = 1e-5
REQUESTS = [GenerationRequest(prompt="a red car", negative_prompt="blurry", frames=3, height=8, width=8, steps=4,
                              guidance=3.0, solver=solver, seed=seed)
            for solver, seed in (("euler", 1), ("ab2", 2))]


def group_sampling(device: str) -> dict:
    parts = tiny_components()
    parts.model.to(device)
    for parameter in parts.model.parameters():  # one set of weights, whatever each rank's RNG did
        dist.broadcast(parameter.data, src=0)
    single = VideoGenerator(parts, torch.device(device))
    split = VideoGenerator(parts, torch.device(device), cfg_group=cfg_parallel_group())
    result = {"latent_error": max(float((split.latents(r) - single.latents(r)).abs().max()) for r in REQUESTS)}
    if dist.get_rank() == 0:
        group = GroupGenerator(split)
        frames = [group.generate(r) for r in REQUESTS]
        group.close()
        result["frame_error"] = max(int((torch.from_numpy(f).int() - torch.from_numpy(single.generate(r)).int())
                                        .abs().max()) for f, r in zip(frames, REQUESTS))
    else:
        result["followed"] = follow_requests(split)
    return result


def _check(results: list[dict]) -> None:
    assert all(r["latent_error"] < LATENT_TOLERANCE for r in results), results
    assert results[0]["frame_error"] <= 1 and results[1]["followed"] == len(REQUESTS), results


def test_cfg_parallel_and_group_generator_on_two_ranks_equal_one_process():
    _check(run_distributed(group_sampling, 2, "cpu"))


@pytest.mark.gpu
@requires_gpus(2)
def test_cfg_parallel_on_two_gpus_equals_one_process():
    _check(run_distributed(group_sampling, 2, "cuda", device="cuda"))
