"""Raw shard samples -> the tensors the trainer consumes: the training window decoded (data.*), then
the latent codec and the text encoder (encoders.*). `mvideo encode` and the remote Ray workers both
go through it, with the trainer's own window choice (dataset.decode_clip) and encoders, so what
they deliver is what the trainer would have encoded inline."""
from __future__ import annotations

import pathlib

import torch

from megatron_video.config.run import DataConfig, EncodersConfig
from megatron_video.data.dataset import decode_clip
from megatron_video.training.conditioning import build_codec, build_text_encoder


class ClipEncoder:
    def __init__(self, data: DataConfig, encoders: EncodersConfig, seed: int, captions: dict[str, str],
                 device: torch.device, run_dir: pathlib.Path):
        self.data, self.seed, self.captions, self.device = data, seed, captions, device
        self.codec = build_codec(encoders, device)
        self.text = build_text_encoder(encoders, device, run_dir)

    @torch.no_grad()
    def encode(self, samples: list[dict], epochs: list[int] | None = None) -> dict | None:
        """{"latents" [B, C, T', H', W'], "text" [B, L, D], "mask" [B, L], "caption", "key"} on the
        CPU for the samples that decode (a clip that does not is logged and left out); None if none do.
        Each clip's window is the one of its epoch (`epochs`, default 0: the first)."""
        epochs = epochs or [0] * len(samples)
        decoded = [clip for clip in (decode_clip(sample, self.data, self.seed, epoch, self.captions)
                                     for sample, epoch in zip(samples, epochs, strict=True)) if clip is not None]
        if not decoded:
            return None
        captions = [clip["caption"] for clip in decoded]
        latents = self.codec.encode(torch.stack([clip["video"] for clip in decoded]).to(self.device))
        text, mask = self.text.encode(captions)
        return {"latents": latents.float().cpu(), "text": text.cpu(), "mask": mask.cpu(), "caption": captions,
                "key": [clip["key"] for clip in decoded]}
