"""One flow-matching loss for training and validation, so both measure the same thing."""
from __future__ import annotations

import torch

from megatron_video.training.build import Components


@torch.no_grad()
def encode_batch(parts: Components, video: torch.Tensor, captions: list[str],
                 drop_text: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Latents and text tokens of a batch; `drop_text` (bool [B]) swaps in the empty prompt (CFG)."""
    if drop_text is not None:
        captions = ["" if drop else c for c, drop in zip(captions, drop_text.tolist())]
    latents = parts.codec.encode(video)
    text, mask = parts.text.encode(captions)
    return latents, text.to(latents.device), mask.to(latents.device)


def flow_matching_loss(model: torch.nn.Module, parts: Components, latents: torch.Tensor,
                       text: torch.Tensor, mask: torch.Tensor, generator: torch.Generator,
                       dtype: torch.dtype) -> torch.Tensor:
    """MSE between the predicted and the true velocity at logit-normal timesteps."""
    batch = latents.shape[0]
    t = parts.flow.sample_timesteps(batch, latents.device, generator=generator)
    noise = torch.randn(latents.shape, generator=generator, device=generator.device).to(latents.device)
    noised = parts.flow.noised(latents, noise, t)
    with torch.autocast(latents.device.type, dtype=dtype, enabled=dtype != torch.float32):
        pred = model(noised, t, text, mask)
    return parts.flow.loss(pred.float(), parts.flow.velocity_target(latents, noise))
