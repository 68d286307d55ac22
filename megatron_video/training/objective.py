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


@torch.no_grad()
def condition_batch(parts: Components, batch: dict, device: torch.device,
                    drop_text: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Latents and text tokens of a loader batch: encoded here from its video and captions, or taken
    as they come when the batch brings them (latent shards, remote encoding workers), with the empty
    prompt's states (the same cached encoding as inline) where `drop_text` drops the text."""
    if "latents" not in batch:
        return encode_batch(parts, batch["video"].to(device), batch["caption"], drop_text)
    latents, text, mask = (batch[name].to(device) for name in ("latents", "text", "mask"))
    if drop_text is not None and bool(drop_text.any()):
        empty_text, empty_mask = parts.text.encode([""])
        rows = drop_text.to(device)
        text = torch.where(rows[:, None, None], empty_text.to(text), text)
        mask = torch.where(rows[:, None], empty_mask.to(device), mask)
    return latents, text, mask


def make_microbatch(parts: Components, latents: torch.Tensor, text: torch.Tensor, mask: torch.Tensor,
                    generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Noised latents at logit-normal timesteps and the velocity the model should predict."""
    t = parts.flow.sample_timesteps(latents.shape[0], latents.device, generator=generator)
    noise = torch.randn(latents.shape, generator=generator, device=generator.device).to(latents.device)
    return {"noised": parts.flow.noised(latents, noise, t), "timesteps": t, "text": text, "mask": mask,
            "target": parts.flow.velocity_target(latents, noise)}
