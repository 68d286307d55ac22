"""The flow-matching objective's inputs, for training and validation alike (the loss itself is
flow.loss, taken on the last pipeline stage by training.step)."""
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


def make_microbatch(parts: Components, latents: torch.Tensor, text: torch.Tensor, mask: torch.Tensor,
                    generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Noised latents at logit-normal timesteps and the velocity the model should predict."""
    t = parts.flow.sample_timesteps(latents.shape[0], latents.device, generator=generator)
    noise = torch.randn(latents.shape, generator=generator, device=generator.device).to(latents.device)
    return {"noised": parts.flow.noised(latents, noise, t), "timesteps": t, "text": text, "mask": mask,
            "target": parts.flow.velocity_target(latents, noise)}
