"""Attention backends behind one call, and the factorised (ST-DiT) attention built on them.

Backends: PyTorch SDPA restricted to one kernel family (cuDNN, flash, memory-efficient, math) via
`torch.nn.attention.sdpa_kernel`, or Transformer Engine's DotProductAttention when TE is installed.
"auto" runs, on a GPU, the kernel measured fastest for the device and shape (attention_choice.py:
cuDNN, flash or efficient SDPA, FlashAttention-4 where it imports), and on CPU torch's flash kernel,
falling through to math when it rejects the inputs.
"""
from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from megatron_video.model.attention_choice import KERNELS, MEASURED


def transformer_engine_available() -> bool:
    return importlib.util.find_spec("transformer_engine") is not None


def auto_sdpa_backends(device: torch.device, compiling: bool = False) -> list:
    """The "auto" order on the CPU and inside torch.compile'd graphs; elsewhere on GPUs "auto" is
    measured (attention_choice.py). Inside a compiled graph the measured choice cannot run (it times
    the kernels with CUDA events), so a fixed order is used: flash, or memory-efficient attention
    where a key mask rules flash out. Not cuDNN: its backward needs the incoming gradient in the
    output's layout (attention_choice.GradInOutputLayout), which this plain SDPA call does not give."""
    if device.type == "cuda" and compiling:
        return [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]
    return [SDPBackend.FLASH_ATTENTION, SDPBackend.MATH]


class Attention(nn.Module):
    """softmax(q k^T / sqrt(d)) v over q, k, v [B, heads, S, d] with an optional key mask [B, S]."""

    def __init__(self, backend: str, local_heads: int, head_dim: int):
        super().__init__()
        self.backend = backend
        self.te_attention = None
        if backend == "te":
            if not transformer_engine_available():
                raise RuntimeError("attention_backend='te' needs Transformer Engine (present in NGC PyTorch images)")
            from transformer_engine.pytorch import DotProductAttention

            self.te_attention = DotProductAttention(local_heads, head_dim, qkv_format="bshd",
                                                    attn_mask_type="padding")

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                key_mask: torch.Tensor | None) -> torch.Tensor:
        if self.te_attention is not None:
            return self._te(q, k, v, key_mask)
        if self.backend != "auto":  # one named kernel (attention_choice.KERNELS)
            return KERNELS[self.backend](q, k, v, key_mask)
        compiling = torch.compiler.is_compiling()
        if q.is_cuda and not compiling:
            return MEASURED.attend(q, k, v, key_mask)
        backends = auto_sdpa_backends(q.device, compiling)
        mask = None if key_mask is None else key_mask[:, None, None, :]
        with sdpa_kernel(backends, set_priority=True):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    def _te(self, q, k, v, key_mask):
        q, k, v = (x.transpose(1, 2).contiguous() for x in (q, k, v))  # bshd
        if key_mask is None:
            out = self.te_attention(q, k, v, attn_mask_type="no_mask")
        else:  # TE's padding mask marks the excluded positions
            out = self.te_attention(q, k, v, attention_mask=~key_mask[:, None, None, :], attn_mask_type="padding")
        b, s = q.shape[:2]
        return out.reshape(b, s, q.shape[2], q.shape[3]).transpose(1, 2)


def factorized_attention(attend: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                         key_mask: torch.Tensor | None, text_len: int, grid: tuple[int, int, int],
                         axis: str) -> torch.Tensor:
    """ST-DiT attention over the joint sequence [text | video (t, h, w order) | padding].

    axis="spatial": each frame's video tokens attend to that frame and to the text.
    axis="temporal": each spatial location's tokens attend along time only (as in ST-DiT/OpenSora).
    Text queries attend to the whole joint sequence in both; padding rows return zeros.
    """
    b, nh, s, d = q.shape
    gt, gh, gw = grid
    n = gt * gh * gw
    video = slice(text_len, text_len + n)
    text_out = attend(q[:, :, :text_len], k, v, key_mask)

    def video_groups(x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, video].reshape(b, nh, gt, gh * gw, d)
        if axis == "spatial":
            return x.permute(0, 2, 1, 3, 4).reshape(b * gt, nh, gh * gw, d)
        return x.permute(0, 3, 1, 2, 4).reshape(b * gh * gw, nh, gt, d)

    qv, kv, vv = video_groups(q), video_groups(k), video_groups(v)
    mask = None
    if axis == "spatial":
        text_keys = lambda x: x[:, :, :text_len].repeat_interleave(gt, dim=0)  # noqa: E731
        kv, vv = torch.cat([text_keys(k), kv], dim=2), torch.cat([text_keys(v), vv], dim=2)
        if key_mask is not None:
            mask = torch.cat([key_mask[:, :text_len].repeat_interleave(gt, dim=0),
                              key_mask.new_ones(b * gt, gh * gw)], dim=1)
    out = attend(qv, kv, vv, mask)
    if axis == "spatial":
        out = out.reshape(b, gt, nh, gh * gw, d).permute(0, 2, 1, 3, 4)
    else:
        out = out.reshape(b, gh * gw, nh, gt, d).permute(0, 2, 3, 1, 4)
    video_out = out.reshape(b, nh, n, d)
    pad_out = q.new_zeros(b, nh, s - text_len - n, d)
    return torch.cat([text_out, video_out, pad_out], dim=2)
