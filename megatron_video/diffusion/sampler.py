"""Sampling: integrate the velocity field from t = 1 (noise) to t = 0 with classifier-free guidance.

Guidance follows v = v_cond + guidance * (v_cond - v_uncond), so guidance = 0 is the plain
conditional flow (the common "scale w" is 1 + guidance). Conditional and unconditional inputs run as
one batched forward. Solvers: "euler" (first order, here in torch) and "unipc" (diffusers'
UniPCMultistepScheduler in flow-prediction mode: a second-order multistep predictor-corrector).
"""
from __future__ import annotations

import itertools
from collections.abc import Callable

import torch

from megatron_video.diffusion.flow_matching import shift_timesteps

SOLVERS = ("euler", "unipc")


def guided_velocity(model: Callable, x: torch.Tensor, t: float, text: torch.Tensor, text_mask: torch.Tensor,
                    null_text: torch.Tensor, null_mask: torch.Tensor, guidance: float) -> torch.Tensor:
    b = x.shape[0]
    null_text = null_text.expand(b, *null_text.shape[1:])
    null_mask = null_mask.expand(b, *null_mask.shape[1:])
    timesteps = torch.full((2 * b,), float(t), device=x.device)
    v = model(torch.cat([x, x]), timesteps, torch.cat([text, null_text.to(text.dtype)]),
              torch.cat([text_mask, null_mask]))
    v_cond, v_uncond = v[:b], v[b:]
    return v_cond + guidance * (v_cond - v_uncond)


def _unipc_scheduler(steps: int, shift: float):
    from diffusers import UniPCMultistepScheduler

    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                        flow_shift=shift, num_train_timesteps=1000)
    scheduler.set_timesteps(steps)
    return scheduler


@torch.no_grad()
def sample(model: Callable, shape: tuple[int, ...], text: torch.Tensor, text_mask: torch.Tensor,
           null_text: torch.Tensor, null_mask: torch.Tensor, steps: int = 30, guidance: float = 4.0,
           solver: str = "euler", generator: torch.Generator | None = None, shift: float = 1.0,
           device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Draw latents of `shape` [B, C, T, H, W]; `null_text`/`null_mask` are the empty prompt ([1 or B, L, ...])."""
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    device = device or text.device
    x = torch.randn(shape, generator=generator, device=generator.device if generator else device, dtype=torch.float32)
    x = x.to(device)
    velocity = lambda x, t: guided_velocity(model, x.to(dtype), t, text, text_mask, null_text, null_mask,  # noqa: E731
                                            guidance).float()
    if solver == "euler":
        ts = shift_timesteps(torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64), shift).tolist()
        for t, t_next in itertools.pairwise(ts):
            x = x + (t_next - t) * velocity(x, t)
        return x
    scheduler = _unipc_scheduler(steps, shift)
    for timestep in scheduler.timesteps:
        t = float(timestep) / scheduler.config.num_train_timesteps
        x = scheduler.step(velocity(x, t), timestep, x).prev_sample
    return x
