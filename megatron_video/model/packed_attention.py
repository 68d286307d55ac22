"""Attention over a packed row: every query sees only the keys of its own sample (segment).

Two implementations of the same block-diagonal attention (model.packed_attention):

- "segments": one call of the model's attention backend per segment, on that segment's rows. It
  runs on any device with whatever kernel the backend picks (cuDNN, flash, FlashAttention-4 on
  GPUs; flash or math on CPU), never materialises a mask, carries the factorised ST-DiT attention
  unchanged, and has a backward everywhere. Its cost is one kernel launch per sample and layer.
- "flex": one FlexAttention call with a document block mask built from the per-row segment ids
  (the varlen / document-masking form of the field: FastVideo, torchtitan). Compiled with
  torch.compile on CUDA; torch runs FlexAttention's backward only there (its CPU path is
  forward-only, eager), so training on CPU refuses it.
"""
from __future__ import annotations

import functools

import torch

from megatron_video.model.attention import Attention, factorized_attention
from megatron_video.model.packing import PackLayout


def segment_attention(attend: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                      key_mask: torch.Tensor | None, layout: PackLayout, axis: str | None) -> torch.Tensor:
    """q, k, v [1, heads, length, d] of one packed row -> attention within each segment; padding
    rows return zeros. `axis` selects the factorised ST-DiT attention (None: full attention)."""
    outputs = []
    for start, segment in zip(layout.starts, layout.segments):
        rows = slice(start, start + segment.length)
        mask = None if key_mask is None else key_mask[:, rows]
        if mask is not None and bool(mask.all()):
            mask = None  # unmasked lets the fastest kernels run
        qs, ks, vs = q[:, :, rows], k[:, :, rows], v[:, :, rows]
        if axis is None:
            outputs.append(attend(qs, ks, vs, mask))
        else:
            outputs.append(factorized_attention(attend, qs, ks, vs, mask, segment.text_len, segment.grid, axis))
    b, heads, _, d = q.shape
    outputs.append(q.new_zeros(b, heads, layout.length - layout.tokens, d))
    return torch.cat(outputs, dim=2)


@functools.cache
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def flex_block_mask(layout: PackLayout, key_mask: torch.Tensor | None, device: torch.device):
    """FlexAttention's block mask: same segment, and a real key (text padding and row padding not)."""
    from torch.nn.attention.flex_attention import create_block_mask

    ids = layout.segment_ids(device)
    valid = (ids >= 0) if key_mask is None else (key_mask[0].to(device) & (ids >= 0))

    def same_sample(b, h, q_index, k_index):
        return (ids[q_index] == ids[k_index]) & valid[k_index]

    return create_block_mask(same_sample, None, None, layout.length, layout.length, device=device)


def flex_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None,
                   layout: PackLayout) -> torch.Tensor:
    """One FlexAttention call over the packed row (compiled on CUDA, eager and forward-only on CPU).
    Rows with no key (padding) come out as zeros."""
    from torch.nn.attention.flex_attention import flex_attention as eager_flex

    # Built once per forward: every layer passes the same key-mask object (held here, so its
    # identity cannot be reused by another mask while cached).
    key = ("flex_mask", str(q.device))
    cached = layout._cache.get(key)
    if cached is None or cached[0] is not key_mask:
        cached = layout._cache[key] = (key_mask, flex_block_mask(layout, key_mask, q.device))
    block_mask = cached[1]
    if q.is_cuda:
        return _compiled_flex()(q, k, v, block_mask=block_mask)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
        raise RuntimeError("model.packed_attention=flex trains only on CUDA (torch's FlexAttention has no CPU "
                           "backward): use packed_attention=segments")
    return eager_flex(q, k, v, block_mask=block_mask)


def packed_attention(method: str, attend: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     key_mask: torch.Tensor | None, layout: PackLayout, axis: str | None) -> torch.Tensor:
    if method == "flex":
        if axis is not None:
            raise ValueError("model.packed_attention=flex does not build the factorised ST-DiT masks: "
                             "use packed_attention=segments with model.spatio_temporal")
        return flex_attention(q, k, v, key_mask, layout)
    return segment_attention(attend, q, k, v, key_mask, layout, axis)
