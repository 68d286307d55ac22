"""Sampling on the CPU runs torch's intra-op threads by training's rule (the demo samples in the
process that trained), and gives the process's count back afterwards."""
import pytest
import torch

from megatron_video.config.loader import load_config
from megatron_video.inference.generator import VideoGenerator
from megatron_video.inference.sample import sample_videos
from megatron_video.model import build_model
from megatron_video.testing.weights import exercised_state
from megatron_video.training import environment
from megatron_video.training.environment import intra_op_threads


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, megatron_single):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "ckpt.pt"
    torch.save({"model": exercised_state(build_model(load_config("demo").model))}, path)
    return path


def threads_while_sampling(checkpoint, tmp_path, monkeypatch, overrides: list[str]) -> list[int]:
    """Torch's intra-op thread count inside each `generate` call of a one-prompt sample_videos run."""
    seen, generate = [], VideoGenerator.generate

    def counting(self, request):
        seen.append(torch.get_num_threads())
        return generate(self, request)

    monkeypatch.setattr(VideoGenerator, "generate", counting)
    cfg = load_config("demo", [f"sample.checkpoint={checkpoint}", f"run.output_dir={tmp_path}", "run.device=cpu",
                               "sample.steps=2", "sample.frames=1", "sample.height=16", "sample.width=16",
                               "sample.prompts=['a video clip']", *overrides])
    assert len(sample_videos(cfg)) == 1
    return seen


def test_sampling_takes_its_share_of_the_cores_and_gives_the_count_back(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(environment, "available_cores", lambda: 4)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two sampling processes on the node: 2 cores each
    with intra_op_threads(4):
        assert threads_while_sampling(checkpoint, tmp_path, monkeypatch, []) == [2]
        assert torch.get_num_threads() == 4


def test_sampling_takes_the_configured_count(checkpoint, tmp_path, monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    with intra_op_threads(2):
        assert threads_while_sampling(checkpoint, tmp_path, monkeypatch, ["train.cpu_threads=1"]) == [1]
        assert torch.get_num_threads() == 2
