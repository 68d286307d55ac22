"""Pooled text conditioning (model.pooled_text_conditioning): the masked mean of the text states,
through an MLP, is added to the timestep embedding that drives every AdaLN modulation.

In float64: the conditioning vector is the timestep embedding plus the MLP of the mean over the real
tokens; the model's output moves with the pooled embedding alone (the joint attention's text tokens
held fixed); padded text tokens change nothing; an all-padding prompt pools to zeros; the new
parameters get gradient, are muP input/hidden weights and are counted by the planner; weights
saved without them are refused, naming the key.
"""
import fnmatch

import pytest
import torch

from megatron_video.config import ConfigError
from megatron_video.inference.generator import load_into
from megatron_video.model import VideoDiTConfig, build_model
from megatron_video.optim.hpo import HpoConfig
from megatron_video.optim.mup import HIDDEN, INPUT, mup_role
from megatron_video.plan.parameters import total_parameters
from megatron_video.testing.weights import exercised_state


def float64_model(**kw):
    torch.manual_seed(0)
    cfg = VideoDiTConfig(in_channels=8, hidden=32, layers=2, heads=2, mlp_ratio=2.0, text_dim=12,
                         pooled_text_conditioning=True, **kw)
    model = build_model(cfg).double()
    exercised_state(model)  # live modulation: the conditioning reaches every block and the final layer
    return model


def inputs(model, batch=2, text_len=5):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, model.cfg.in_channels, 2, 4, 4, generator=g, dtype=torch.float64)
    t = torch.rand(batch, generator=g, dtype=torch.float64)
    text = torch.randn(batch, text_len, model.cfg.text_dim, generator=g, dtype=torch.float64)
    mask = torch.ones(batch, text_len, dtype=torch.bool)
    mask[0, 3:] = False
    return x, t, text, mask


def test_conditioning_adds_the_mlp_of_the_masked_mean(megatron_single):
    model = float64_model()
    _, t, text, mask = inputs(model)
    cond = model.conditioning(t, text, mask, None)
    means = torch.stack([text[0, :3].mean(0), text[1].mean(0)])
    torch.testing.assert_close(cond, model.time_embed(t) + model.pooled_text_embed.mlp(means), atol=1e-12, rtol=0)
    assert model.pooled_text_embed(text, torch.zeros_like(mask)).sub(model.pooled_text_embed.mlp(
        torch.zeros_like(means))).abs().max() == 0  # an all-padding prompt pools to zeros


def test_output_moves_with_the_pooled_embedding_and_ignores_padding(megatron_single):
    model = float64_model()
    x, t, text, mask = inputs(model)
    with torch.no_grad():
        base = model(x, t, text, mask)
        noisy = text.clone()
        noisy[0, 3:] = torch.randn_like(noisy[0, 3:]) * 10  # padded tokens only
        assert torch.equal(model(x, t, noisy, mask), base)
        model.pooled_text_embed.mlp[2].bias.add_(0.5)  # the pooled path alone; the text tokens as they were
        moved = model(x, t, text, mask)
    assert (moved - base).abs().max() > 1e-3


def test_pooled_weights_get_gradient_and_a_mup_role(megatron_single):
    model = float64_model()
    x, t, text, mask = inputs(model)
    model(x, t, text, mask).square().sum().backward()
    for name, param in model.pooled_text_embed.named_parameters():
        assert param.grad.abs().max() > 0, name
    params = dict(model.named_parameters())
    assert mup_role("pooled_text_embed.mlp.0.weight", params["pooled_text_embed.mlp.0.weight"]) == INPUT
    assert mup_role("pooled_text_embed.mlp.2.weight", params["pooled_text_embed.mlp.2.weight"]) == HIDDEN
    assert total_parameters(model.cfg) == sum(p.numel() for p in params.values())
    assert total_parameters(model.cfg) - total_parameters(VideoDiTConfig(**{
        **vars(model.cfg), "pooled_text_conditioning": False})) == 12 * 32 + 32 + 32 * 32 + 32


def test_weights_without_the_pooled_path_are_refused_naming_the_key(megatron_single, tmp_path):
    model = float64_model()
    older = {name: value for name, value in model.state_dict().items() if not name.startswith("pooled_text_embed.")}
    with pytest.raises(ConfigError, match="model.pooled_text_conditioning") as refused:
        load_into(model, older, tmp_path / "model.safetensors")
    assert refused.value.key == "sample.checkpoint"


def test_hpo_default_patterns_reach_every_parameter(megatron_single):
    """HEBO's default knobs (hpo.patterns) cover the pooled path too: a parameter no pattern matches keeps
    multiplier 1 and is silently left out of the search."""
    patterns = HpoConfig().patterns
    names = [name for name, _ in float64_model().named_parameters()]
    assert any(name.startswith("pooled_text_embed.") for name in names)
    assert [n for n in names if not any(fnmatch.fnmatchcase(n, p) for p in patterns)] == []
