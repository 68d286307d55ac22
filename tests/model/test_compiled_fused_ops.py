"""torch.compile of the model with the fused block ops on matches the eager model (CPU).

On CUDA the blocks run the Triton kernels and, under torch.compile, get their inputs from inductor's
graphs, whose layouts may differ from eager's (benchmarks/notes.md, 2026-12-02 "compiled model").
Here the kernels run interpreted (TRITON_INTERPRET=1, set by tests/conftest.py without a GPU): the
blocks' op calls are routed to the fused path although the tensors are on the CPU, so the CPU inductor
graphs feed the same kernel entry points. The first compile takes about 70 s on two busy cores
(inductor builds its C++ kernels), about 10 s once its cache holds them.
"""
import pytest
import torch

import megatron_video.model.block as block_module
from megatron_video.model import VideoDiTConfig, block_ops, build_model


@pytest.mark.slow
@pytest.mark.parametrize("block", ["parallel", "sequential"])
def test_compiled_model_with_fused_ops_matches_eager(megatron_single, monkeypatch, block):
    calls = []

    @torch.compiler.disable
    def fused_everywhere(name, fused, first, *args):
        calls.append(name)
        return block_ops._fused(name, first, *args)

    monkeypatch.setattr(block_module, "block_op", fused_everywhere)
    torch._dynamo.reset()
    torch.manual_seed(0)
    cfg = VideoDiTConfig(in_channels=4, hidden=32, layers=2, heads=2, text_dim=16, block=block)
    model = build_model(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().sum() == 0:  # zero-initialised outputs: give every path a signal
                p.normal_(0, 0.02)
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, 4, 2, 4, 4, generator=g), torch.rand(2, generator=g)
    text, mask = torch.randn(2, 3, 16, generator=g), torch.ones(2, 3, dtype=torch.bool)
    mask[1, 2] = False  # a padded caption: the key-mask path
    weights = torch.randn(2, 4, 2, 4, 4, generator=g)

    def run(forward):
        model.zero_grad()
        out = forward(x, t, text, mask)
        (out * weights).sum().backward()
        return out.detach(), [p.grad.clone() for p in model.parameters()]

    eager_out, eager_grads = run(model)
    eager_calls = len(calls)
    compiled_out, compiled_grads = run(torch.compile(model))
    assert eager_calls > 0 and len(calls) == 2 * eager_calls  # the compiled model ran the same fused ops
    # Same kernels on the same values: only inductor's reordering of the float32 arithmetic between them.
    torch.testing.assert_close(compiled_out, eager_out, rtol=1e-4, atol=1e-5)
    for (name, _), got, want in zip(model.named_parameters(), compiled_grads, eager_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")
