"""grads_finite: a step is skipped exactly when the loss or any gradient element is NaN or infinite."""
import pytest
import torch

from megatron_video.training.faults import grads_finite


class _Buffer:
    def __init__(self, grad_data: torch.Tensor):
        self.grad_data = grad_data


class _Chunk:
    """What grads_finite reads of a DDP-wrapped chunk: its gradient buffers."""

    def __init__(self, *grads: torch.Tensor):
        self.buffers = [_Buffer(grad) for grad in grads]


def _chunks(dtype: torch.dtype = torch.float32) -> list[_Chunk]:
    gen = torch.Generator().manual_seed(0)
    return [_Chunk(torch.randn(1000, generator=gen).to(dtype), torch.empty(0, dtype=dtype)),
            _Chunk(torch.randn(777, generator=gen).to(dtype))]


def test_finite_gradients_and_loss_pass_even_at_the_edge_of_the_float_range():
    chunks = _chunks()
    assert grads_finite(chunks, 0.5, torch.device("cpu"))
    chunks[1].buffers[0].grad_data[3] = torch.finfo(torch.float32).max  # a sum of squares would overflow
    chunks[1].buffers[0].grad_data[4] = -torch.finfo(torch.float32).max
    assert grads_finite(chunks, 0.5, torch.device("cpu"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])  # grad buffers in fp32 or the model's bf16
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("where", [(0, 0, 0), (0, 0, 999), (1, 0, 400)])
def test_one_non_finite_gradient_element_fails_the_step(bad, where, dtype):
    chunks = _chunks(dtype)
    assert grads_finite(chunks, 0.5, torch.device("cpu"))
    chunk, buffer, element = where
    chunks[chunk].buffers[buffer].grad_data[element] = bad
    assert not grads_finite(chunks, 0.5, torch.device("cpu"))


@pytest.mark.parametrize("loss", [float("nan"), float("inf")])
def test_a_non_finite_loss_fails_the_step(loss):
    assert not grads_finite(_chunks(), loss, torch.device("cpu"))
