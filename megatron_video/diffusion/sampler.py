"""Sampling: integrate the velocity field from t = 1 (noise) to t = 0 with classifier-free guidance.

Guidance follows v = v_cond + guidance * (v_cond - v_neg), so guidance = 0 is the plain conditional
flow (the common "scale w" is 1 + guidance); v_neg is the velocity under the negative prompt (the
empty prompt unless one is given). The two branches run as one batched forward, or, with a CFG
group of two ranks, one branch per rank (CFG parallel). The model call is the only thing a
parallel layout changes: a context-parallel model shards its sequence inside its forward, and every
rank runs the same solver on the same (replicated) latents.

Solvers, all on the same shifted time grid:
- "euler": first order.
- "ab2": second-order Adams-Bashforth on the velocity, with variable steps (one model call per step,
  like Euler; the first step is Euler's). The flow-matching velocity is smooth in t, so its error
  falls with the square of the step count where Euler's falls linearly (tests/inference).
- "unipc": diffusers' UniPCMultistepScheduler in flow-prediction mode (Wan's default): a multistep
  predictor-corrector in log-SNR. Its grid starts at 1 - 1/1000, not 1.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
import torch.distributed as dist

from megatron_video.diffusion.flow_matching import shift_timesteps

SOLVERS = ("euler", "ab2", "unipc")
Velocity = Callable[[torch.Tensor, float], torch.Tensor]


def time_grid(steps: int, shift: float = 1.0) -> list[float]:
    """steps + 1 times from 1 to 0, uniform before the resolution shift."""
    return shift_timesteps(torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64), shift).tolist()


def guided_velocity(model: Callable, text: torch.Tensor, text_mask: torch.Tensor, negative_text: torch.Tensor,
                    negative_mask: torch.Tensor, guidance: float, dtype: torch.dtype = torch.float32,
                    cfg_group: dist.ProcessGroup | None = None) -> Velocity:
    """The guided field v(x, t) of `model` for prompts `text` [B, L, D] against `negative_text`
    ([1 or B, L, D]), the model under autocast to `dtype`, the result in float32. With `cfg_group`
    (two ranks), rank 0 of the group runs the conditional branch and rank 1 the negative one, and
    the pair is exchanged: both ranks return the same velocity."""
    b = text.shape[0]
    negative_text = negative_text.expand(b, *negative_text.shape[1:]).to(text.dtype)
    negative_mask = negative_mask.expand(b, *negative_mask.shape[1:])
    if guidance == 0.0:  # the negative branch would be multiplied by zero
        branches = None
    elif cfg_group is None:
        branches = (torch.cat([text, negative_text]), torch.cat([text_mask, negative_mask]))
    else:
        if dist.get_world_size(cfg_group) != 2:
            raise ValueError("CFG parallel needs a group of exactly 2 ranks (conditional, negative)")
        mine = dist.get_rank(cfg_group)
        branches = ((text, text_mask), (negative_text, negative_mask))[mine]

    def forward(x: torch.Tensor, t: float, prompts: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=dtype, enabled=dtype != torch.float32):
            return model(x, torch.full((x.shape[0],), float(t), device=x.device), prompts, masks).float()

    def velocity(x: torch.Tensor, t: float) -> torch.Tensor:
        if branches is None:
            return forward(x, t, text, text_mask)
        if cfg_group is None:
            v = forward(torch.cat([x, x]), t, *branches)
            v_cond, v_neg = v[:b], v[b:]
        else:
            v = forward(x, t, *branches).contiguous()
            pair = [torch.empty_like(v) for _ in range(2)]
            dist.all_gather(pair, v, group=cfg_group)
            v_cond, v_neg = pair
        return v_cond + guidance * (v_cond - v_neg)

    return velocity


def integrate(velocity: Velocity, x: torch.Tensor, steps: int, solver: str = "euler",
              shift: float = 1.0) -> torch.Tensor:
    """Carry noise `x` at t = 1 to t = 0 along `velocity` with `steps` model calls."""
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if solver == "unipc":
        return _integrate_unipc(velocity, x, steps, shift)
    previous: tuple[torch.Tensor, float] | None = None
    for t, t_next in itertools.pairwise(time_grid(steps, shift)):
        v, h = velocity(x, t), t_next - t
        if solver == "ab2" and previous is not None:
            # The linear extrapolation of v through the last two calls, averaged over [t, t_next].
            v_prev, h_prev = previous
            ratio = h / h_prev
            x = x + h * ((1 + ratio / 2) * v - (ratio / 2) * v_prev)
        else:
            x = x + h * v
        previous = (v, h)
    return x


def _integrate_unipc(velocity: Velocity, x: torch.Tensor, steps: int, shift: float) -> torch.Tensor:
    from diffusers import UniPCMultistepScheduler

    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                        flow_shift=shift, num_train_timesteps=1000)
    scheduler.set_timesteps(steps)
    for timestep in scheduler.timesteps:
        t = float(timestep) / scheduler.config.num_train_timesteps
        x = scheduler.step(velocity(x, t), timestep, x).prev_sample
    return x


def initial_noise(shape: tuple[int, ...], seed: int, device: torch.device | str) -> torch.Tensor:
    """Noise drawn on the CPU from `seed`: the same latents on every device and every rank."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float32).to(device)


@torch.no_grad()
def sample(model: Callable, shape: tuple[int, ...], text: torch.Tensor, text_mask: torch.Tensor,
           negative_text: torch.Tensor, negative_mask: torch.Tensor, steps: int = 30, guidance: float = 4.0,
           solver: str = "euler", seed: int = 0, shift: float = 1.0, device: torch.device | str | None = None,
           dtype: torch.dtype = torch.float32, cfg_group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """Draw latents of `shape` [B, C, T, H, W] from the noise of `seed` (see guided_velocity for the rest)."""
    x = initial_noise(shape, seed, device or text.device)
    velocity = guided_velocity(model, text, text_mask, negative_text, negative_mask, guidance, dtype, cfg_group)
    return integrate(velocity, x, steps, solver, shift)
