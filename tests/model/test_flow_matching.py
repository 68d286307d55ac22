"""Flow-matching formulas: interpolation, target, shifted logit-normal timesteps, loss."""
import math

import pytest
import torch

from megatron_video.diffusion import FlowMatching, resolution_shift
from megatron_video.diffusion.flow_matching import shift_timesteps


def test_interpolation_endpoints_and_velocity_is_its_time_derivative():
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 4, 2, generator=g, dtype=torch.float64), torch.randn(3, 4, 2, generator=g,
                                                                                    dtype=torch.float64)
    fm = FlowMatching()
    torch.testing.assert_close(fm.noised(x0, noise, torch.zeros(3)), x0)
    torch.testing.assert_close(fm.noised(x0, noise, torch.ones(3)), noise)
    t = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    torch.testing.assert_close(fm.noised(x0, noise, t)[1], 0.5 * x0[1] + 0.5 * noise[1])
    eps = 1e-6
    derivative = (fm.noised(x0, noise, t + eps) - fm.noised(x0, noise, t - eps)) / (2 * eps)
    torch.testing.assert_close(derivative, fm.velocity_target(x0, noise), atol=1e-8, rtol=1e-6)
    torch.testing.assert_close(fm.velocity_target(x0, noise), noise - x0)


def test_shift():
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    torch.testing.assert_close(shift_timesteps(t, 1.0), t)
    assert shift_timesteps(torch.tensor(0.5), 3.0).item() == pytest.approx(0.75)
    shifted = shift_timesteps(t, 3.0)
    assert shifted[0] == 0 and shifted[-1] == 1 and bool((shifted[1:-1] > t[1:-1]).all())
    assert resolution_shift(4 * 4096, 4096) == pytest.approx(2.0)


def test_logit_normal_timesteps():
    g = torch.Generator().manual_seed(0)
    t = FlowMatching(logit_mean=0.5, logit_std=0.8).sample_timesteps(40000, generator=g)
    assert t.shape == (40000,) and bool(((t > 0) & (t < 1)).all())
    logits = torch.log(t / (1 - t))
    assert logits.mean().item() == pytest.approx(0.5, abs=0.02)
    assert logits.std().item() == pytest.approx(0.8, abs=0.02)
    shifted = FlowMatching(shift=3.0).sample_timesteps(40000, generator=torch.Generator().manual_seed(1))
    assert shifted.median().item() == pytest.approx(0.75, abs=0.01)  # median of sigmoid(N(0,1)) is 0.5 -> 0.75


def test_loss_is_mse_in_float32():
    pred, target = torch.tensor([1.0, 2.0], dtype=torch.bfloat16), torch.tensor([0.0, 0.0])
    loss = FlowMatching.loss(pred, target)
    assert loss.dtype == torch.float32 and math.isclose(loss.item(), 2.5)
