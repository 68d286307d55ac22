"""The TextEncoder protocol, and the HF-encoder forward both concrete encoders share."""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class TextEncoder(Protocol):
    dim: int
    identity: str  # names the weights and settings, so caches never mix two encoders' outputs

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]: ...


@torch.no_grad()
def encode_padded(tokenizer, model, prompts: list[str], max_len: int,
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenise to exactly max_len (truncate or pad), run the encoder, zero the padded states."""
    batch = tokenizer(prompts, padding="max_length", truncation=True, max_length=max_len, return_tensors="pt")
    batch = {k: v.to(device) for k, v in batch.items()}
    states = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    mask = batch["attention_mask"].bool()
    return (states.float() * mask[..., None]).cpu(), mask.cpu()
