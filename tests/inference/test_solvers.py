"""Solvers against a case with a known answer: Gaussian data, whose exact velocity field and exact
noise-to-data map are closed-form, so each solver's error can be measured as the steps grow."""
import itertools

import pytest
import torch

from megatron_video.diffusion.sampler import initial_noise, integrate, sample, time_grid

SPREAD = 0.3  # data standard deviation (noise has 1)


def gaussian_velocity(x: torch.Tensor, t: torch.Tensor | float, mean: torch.Tensor | float) -> torch.Tensor:
    """E[noise - x0 | x_t = x] for x0 ~ N(mean, SPREAD^2), x_t = (1 - t) x0 + t noise."""
    a, b = 1 - t, t
    var = a * a * SPREAD**2 + b * b
    return (b - a * SPREAD**2) / var * (x - a * mean) - mean


class GaussianModel:
    """The exact field of the conditional data N(+0.5, .) for a prompt (mask on) and of N(-0.2, .)
    for the negative prompt (mask off): a model with zero error."""

    def __call__(self, x, t, text, mask):
        mean = torch.where(mask[:, :1], 0.5, -0.2).reshape(-1, 1, 1, 1, 1).to(x.dtype)
        return gaussian_velocity(x, t.reshape(-1, 1, 1, 1, 1).to(x.dtype), mean)


def solver_error(solver: str, steps: int, shift: float) -> float:
    noise = initial_noise((1, 20_000), seed=0, device="cpu").double()
    exact = 0.5 + SPREAD * noise  # the flow is linear: noise e at t = 1 ends at mean + SPREAD e
    out = integrate(lambda x, t: gaussian_velocity(x, t, 0.5), noise, steps, solver, shift)
    return float((out - exact).pow(2).mean().sqrt())


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_second_order_error_falls_with_the_square_of_the_steps(shift):
    euler = {n: solver_error("euler", n, shift) for n in (16, 64)}
    ab2 = {n: solver_error("ab2", n, shift) for n in (16, 64)}
    # 4x the steps: Euler's error falls about 4x (first order), AB2's about 16x (second order).
    assert 3.0 < euler[16] / euler[64] < 5.0, euler
    assert ab2[16] / ab2[64] > 12.0, ab2
    assert ab2[16] < euler[16] / 2 and ab2[64] < euler[64] / 10, (euler, ab2)


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_unipc_beats_euler_at_equal_steps(shift):
    # Not asymptotically second order here: diffusers' flow grid starts at t = 0.999 (a fixed
    # error), and log-SNR steps near t = 1 do not shrink as the step count grows.
    for steps in (16, 32, 64):
        assert solver_error("unipc", steps, shift) < 0.75 * solver_error("euler", steps, shift)


@pytest.mark.parametrize("solver", ["euler", "ab2"])
def test_guidance_with_a_negative_prompt_reaches_the_extrapolated_data(solver):
    # Velocity is linear in the data mean, so v_c + g (v_c - v_n) is the field of the mean
    # (1 + g) m_c - g m_n: guided sampling must end at that Gaussian.
    guidance, shape = 2.0, (2, 4, 3, 8, 8)
    text = torch.zeros(2, 1, 4)
    cond_mask, negative_mask = torch.ones(2, 1, dtype=torch.bool), torch.zeros(1, 1, dtype=torch.bool)
    out = sample(GaussianModel(), shape, text, cond_mask, torch.zeros(1, 1, 4), negative_mask, steps=64,
                 guidance=guidance, solver=solver, seed=7, shift=3.0)
    mean = (1 + guidance) * 0.5 - guidance * -0.2
    exact = mean + SPREAD * initial_noise(shape, seed=7, device="cpu")
    tol = 0.1 if solver == "euler" else 8e-3
    torch.testing.assert_close(out, exact, atol=tol, rtol=0)


def test_time_grid_runs_from_noise_to_data_and_shift_spends_steps_at_high_noise():
    plain, shifted = time_grid(8), time_grid(8, shift=3.0)
    assert plain[0] == shifted[0] == 1.0 and plain[-1] == shifted[-1] == 0.0
    assert all(a > b for a, b in itertools.pairwise(shifted))
    assert sum(t > 0.5 for t in shifted) > sum(t > 0.5 for t in plain)


def test_same_seed_same_noise_other_seed_other_noise():
    a, b = initial_noise((2, 3), 11, "cpu"), initial_noise((2, 3), 11, "cpu")
    assert torch.equal(a, b) and not torch.equal(a, initial_noise((2, 3), 12, "cpu"))
