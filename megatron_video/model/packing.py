"""Sequence packing: several samples of any shape in one row of the joint sequence.

A pack is one row [seg 0 | seg 1 | ... | padding] where segment i is sample i's own joint sequence
[text (max_text_len tokens, key-masked where padded) | video tokens of its grid]. Samples of
different durations and resolutions (images are 1-frame videos) share a row without padding each
one to the largest: attention stays inside each segment (packed_attention.py), RoPE positions
restart at every segment (each is normalised by its own grid), and every token is modulated by its
own sample's timestep (and text), so each sample is computed exactly as it would be alone.

One pack is one row: the model sees a batch of 1, the per-token modulation rides on the kernels'
batch axis, and a fixed row length (the token budget) keeps pipeline-parallel receive buffers one
size. The layout is the flash-attn varlen / FlexAttention document description (cu_seqlens,
per-token segment ids).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from megatron_video.model.patchify import patch_grid, patchify, unpatchify
from megatron_video.model.rope import video_positions


@dataclass(frozen=True)
class Segment:
    """One sample of a pack: its text tokens (all of them, padded ones masked) and its token grid."""

    text_len: int
    grid: tuple[int, int, int]

    @property
    def video_len(self) -> int:
        return math.prod(self.grid)

    @property
    def length(self) -> int:
        return self.text_len + self.video_len


@dataclass(frozen=True)
class PackLayout:
    """Where each segment of one packed row lies; `length` includes the trailing padding."""

    segments: tuple[Segment, ...]
    length: int
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.segments:
            raise ValueError("a pack needs at least one sample")
        if self.length < self.tokens:
            raise ValueError(f"pack length {self.length} is shorter than its {self.tokens} tokens")

    @classmethod
    def of(cls, segments: list[Segment], length: int | None = None, multiple: int = 1) -> PackLayout:
        """The layout of `segments` padded to `length` (default: their tokens), then to a multiple."""
        length = sum(s.length for s in segments) if length is None else length
        return cls(tuple(segments), length + (-length) % multiple)

    @property
    def tokens(self) -> int:
        return sum(s.length for s in self.segments)

    @property
    def starts(self) -> list[int]:
        return [0, *torch.tensor([s.length for s in self.segments]).cumsum(0).tolist()][:-1]

    def cu_seqlens(self, device: torch.device | None = None) -> torch.Tensor:
        """Segment boundaries [segments + 1] (int32), as flash-attn's varlen kernels take them."""
        lengths = torch.tensor([0] + [s.length for s in self.segments], dtype=torch.int32, device=device)
        return lengths.cumsum(0, dtype=torch.int32)

    def segment_ids(self, device: torch.device | None = None) -> torch.Tensor:
        """The segment of each row [length] (long); -1 for padding."""
        return self._cached("ids", device, lambda: torch.cat([
            torch.repeat_interleave(torch.arange(len(self.segments)), torch.tensor([s.length for s in self.segments])),
            torch.full((self.length - self.tokens,), -1, dtype=torch.long)]))

    def modulation_rows(self, device: torch.device | None = None) -> torch.Tensor:
        """The sample whose conditioning modulates each row [length]: padding takes sample 0's
        (its outputs are never read, and it is no key of any query)."""
        return self.segment_ids(device).clamp(min=0)

    def key_mask(self, text_mask: torch.Tensor) -> torch.Tensor:
        """[1, length] True = a real key: text_mask [1, text tokens of all segments] marks the text keys."""
        parts, texts = [], text_mask[0].bool().split([s.text_len for s in self.segments])
        for text, segment in zip(texts, self.segments):
            parts += [text, text.new_ones(segment.video_len)]
        return torch.cat(parts + [text_mask.new_zeros(self.length - self.tokens, dtype=torch.bool)])[None]

    def positions(self, device: torch.device | None = None) -> torch.Tensor:
        """Normalised (t, h, w) RoPE positions [length, 3], restarting at each segment (text and
        padding at 0), so a sample's rotations are those it would have alone."""
        return self._cached("positions", device, lambda: torch.cat(
            [torch.cat([torch.zeros(s.text_len, 3, dtype=torch.float64), video_positions(s.grid)])
             for s in self.segments] + [torch.zeros(self.length - self.tokens, 3, dtype=torch.float64)]))

    def text_rows(self, device: torch.device | None = None) -> torch.Tensor:
        """Rows of the text tokens [segments * text_len], segment by segment."""
        return self._cached("text", device, lambda: torch.cat(
            [torch.arange(start, start + s.text_len) for start, s in zip(self.starts, self.segments)]))

    def video_rows(self, device: torch.device | None = None) -> torch.Tensor:
        """Rows of the video tokens [sum of video lengths], segment by segment."""
        return self._cached("video", device, lambda: torch.cat(
            [torch.arange(start + s.text_len, start + s.length) for start, s in zip(self.starts, self.segments)]))

    def video_segments(self, device: torch.device | None = None) -> torch.Tensor:
        """The segment of each video token [sum of video lengths] (the packed loss's grouping)."""
        return self.segment_ids(device)[self.video_rows(device)]

    def _cached(self, name: str, device: torch.device | None, build) -> torch.Tensor:
        key = (name, str(device))
        if key not in self._cache:
            self._cache[key] = build().to(device)
        return self._cache[key]


def pack_samples(latents: list[torch.Tensor], texts: list[torch.Tensor], text_masks: list[torch.Tensor],
                 patch: list[int], length: int | None = None, multiple: int = 1
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, PackLayout]:
    """Latents [C, T, H, W] (any T, H, W), texts [L, text_dim] and masks [L] of samples -> one
    pack: video tokens [1, N, patch_dim], text [1, samples * L, text_dim], text mask [1, samples * L]
    and its layout (padded to `length`, then to `multiple`)."""
    segments = [Segment(text.shape[0], patch_grid(tuple(x.shape[-3:]), patch)) for x, text in zip(latents, texts)]
    layout = PackLayout.of(segments, length, multiple)
    video = torch.cat([patchify(x[None], patch)[0] for x in latents])[None]
    return video, torch.cat(texts)[None], torch.cat(text_masks)[None], layout


def segment_losses(prediction: torch.Tensor, target: torch.Tensor, layout: PackLayout) -> torch.Tensor:
    """Per-sample mean squared error [segments] of packed video tokens [1, N, patch_dim] (float32):
    each sample's loss is exactly the unpacked loss of that sample alone."""
    per_token = ((prediction.float() - target.float()) ** 2).mean(-1)[0]
    segments = layout.video_segments(prediction.device)
    sums = per_token.new_zeros(len(layout.segments)).index_add(0, segments, per_token)
    counts = torch.tensor([s.video_len for s in layout.segments], dtype=sums.dtype, device=sums.device)
    return sums / counts


def unpack_video(tokens: torch.Tensor, layout: PackLayout, patch: list[int], channels: int) -> list[torch.Tensor]:
    """Packed video tokens [1, N, patch_dim] -> each sample's [C, T, H, W]."""
    parts = tokens[0].split([s.video_len for s in layout.segments])
    return [unpatchify(part[None], patch, s.grid, channels)[0] for part, s in zip(parts, layout.segments)]
