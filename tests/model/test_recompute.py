"""Selective recompute (train.recompute) changes memory, not results: equal outputs and gradients,
the recomputed part really runs again in backward, and forward keeps fewer bytes for backward."""
import pytest
import torch

from megatron_video.model import VideoDiTConfig, build_model
from megatron_video.model.recompute import RECOMPUTE


def run(cfg, state, inputs, recompute):
    model = build_model(cfg, recompute=recompute)
    model.load_state_dict(state)
    calls = {"attention": 0, "block": 0}
    # Pre-hooks: a recomputation stops as soon as the last saved tensor is regenerated, before a
    # forward hook would run.
    model.blocks[0].attend.register_forward_pre_hook(lambda *_: calls.__setitem__("attention", calls["attention"] + 1))
    model.blocks[1].register_forward_pre_hook(lambda *_: calls.__setitem__("block", calls["block"] + 1))
    saved = [0]

    def pack(tensor):  # every tensor autograd keeps outside a checkpointed region
        saved[0] += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = model(*inputs)
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    return out, {n: p.grad for n, p in model.named_parameters()}, calls, saved[0]


@pytest.mark.parametrize("block", ["parallel", "sequential"])
def test_recompute_gives_equal_gradients(megatron_single, tiny_inputs, block):
    cfg = VideoDiTConfig(in_channels=8, hidden=32, layers=2, heads=2, mlp_ratio=2.0, text_dim=16, block=block)
    torch.manual_seed(0)
    state = build_model(cfg).state_dict()
    inputs = tiny_inputs(cfg)
    out, grads, calls, saved = run(cfg, state, inputs, "none")
    assert calls == {"attention": 1, "block": 1}
    kept = {}
    for mode in RECOMPUTE[1:]:
        out_r, grads_r, calls_r, kept[mode] = run(cfg, state, inputs, mode)
        assert torch.equal(out_r, out), mode
        for name, grad in grads.items():
            assert torch.equal(grads_r[name], grad), f"{mode}: {name}"
        expected = {"attention": 2 if mode in ("attention", "block") else 1, "block": 2 if mode == "block" else 1}
        assert calls_r == expected, mode
    assert saved > kept["attention"] > kept["block"] and saved > kept["mlp"] > kept["block"], (saved, kept)
