"""Rectified flow matching: x_t = (1 - t) x0 + t noise, the model predicts v = noise - x0.

Training timesteps are logit-normal (SD3), then shifted towards noise for larger inputs:
t' = shift t / (1 + (shift - 1) t), with shift = sqrt(tokens / base_tokens) (more tokens keep more
signal at a given t, so they need noisier timesteps).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def shift_timesteps(t: torch.Tensor, shift: float) -> torch.Tensor:
    return shift * t / (1.0 + (shift - 1.0) * t)


def resolution_shift(tokens: int, base_tokens: int = 4096) -> float:
    """Timestep shift for `tokens` video tokens relative to the resolution where shift 1 was tuned."""
    return math.sqrt(tokens / base_tokens)


@dataclass
class FlowMatching:
    shift: float = 1.0
    logit_mean: float = 0.0
    logit_std: float = 1.0

    def sample_timesteps(self, batch: int, device: torch.device | str = "cpu",
                         generator: torch.Generator | None = None) -> torch.Tensor:
        """t [batch] in (0, 1): sigmoid of a normal(logit_mean, logit_std), then the shift."""
        gen_device = generator.device if generator is not None else device
        z = torch.randn(batch, generator=generator, device=gen_device).to(device)
        return shift_timesteps(torch.sigmoid(self.logit_mean + self.logit_std * z), self.shift)

    @staticmethod
    def noised(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.reshape(-1, *([1] * (x0.dim() - 1))).to(x0.dtype)
        return (1.0 - t) * x0 + t * noise

    @staticmethod
    def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return noise - x0

    @staticmethod
    def loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean squared error, computed in float32 whatever the model's precision."""
        return torch.mean((pred.float() - target.float()) ** 2)
