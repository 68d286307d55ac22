"""The residual offset c: what a fresh block computes and which of its weights get gradient."""
import pytest
import torch

from megatron_video.model import VideoDiTConfig, build_model
from megatron_video.model.block import JointSequence
from megatron_video.model.rope import video_positions


def block_inputs(cfg, seed=0):
    g = torch.Generator().manual_seed(seed)
    grid = (2, 2, 3)
    text_len, n, b = 4, 12, 2
    x = torch.randn(text_len + n, b, cfg.hidden, generator=g)
    cond = torch.randn(b, cfg.hidden, generator=g)
    v_first = torch.randn(b, cfg.heads, text_len + n, cfg.head_dim, generator=g)
    seq = JointSequence(positions=torch.cat([torch.zeros(text_len, 3, dtype=torch.float64), video_positions(grid)]),
                        key_mask=None, text_len=text_len, grid=grid)
    return x, cond, seq, v_first


def block_grads(block, inputs):
    x, cond, seq, v_first = inputs
    block.zero_grad()
    out, _ = block(x, cond, None, seq, v_first)
    (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
    return out.detach(), {n: p.grad.clone() for n, p in block.named_parameters()}


@pytest.mark.parametrize("block_type", ["parallel", "sequential"])
def test_fresh_block_gradients_with_and_without_offset(megatron_single, block_type):
    torch.manual_seed(0)
    block = build_model(VideoDiTConfig(hidden=32, heads=2, layers=4, block=block_type)).blocks[1]
    assert block.offset == pytest.approx(0.25)
    inputs = block_inputs(VideoDiTConfig(hidden=32, heads=2))
    _, grads = block_grads(block, inputs)
    for name, grad in grads.items():
        if name == "modulation.0.weight" or name == "modulation.0.bias":
            # Sits behind the zero-initialised output layer modulation.2: gradient from step two on.
            assert torch.count_nonzero(grad) == 0, name
        else:
            assert grad.abs().max() > 1e-6, f"{name} got no gradient with c = 1/L"

    block.offset = 0.0  # no offset: the fresh block is exactly the identity and its projections are frozen
    out, grads = block_grads(block, inputs)
    torch.testing.assert_close(out, inputs[0], atol=0, rtol=0)
    projections = [n for n in grads if n.endswith(".weight") and "modulation" not in n] + ["value_lambdas"]
    for name in projections:
        assert torch.count_nonzero(grads[name]) == 0, f"{name} got gradient although c = 0"
    assert grads["modulation.2.weight"].abs().max() > 0  # only the gate can move the block


def test_zero_initialised_block_is_identity_and_offset_lets_it_learn(megatron_single):
    """With W_out zeroed too, the block is the identity; c alone decides whether gradient reaches it."""
    torch.manual_seed(0)
    cfg = VideoDiTConfig(hidden=32, heads=2, layers=4)
    inputs = block_inputs(cfg)
    for offset, learns in ((0.25, True), (0.0, False)):
        block = build_model(cfg).blocks[1]
        block.offset = offset
        with torch.no_grad():
            block.w_out.weight.zero_()
        out, grads = block_grads(block, inputs)
        torch.testing.assert_close(out, inputs[0], atol=0, rtol=0)
        assert bool(grads["w_out.weight"].abs().max() > 0) == learns
        # Gradient spreads one layer per step: W_out, then the gate (modulation.2), then modulation.0.
        for _ in range(2):
            with torch.no_grad():
                for p, g in zip(block.parameters(), grads.values()):
                    p -= 0.1 * g
            _, grads = block_grads(block, inputs)
        for name, grad in grads.items():
            assert bool(grad.abs().max() > 0) == learns, f"c={offset}: {name}"
