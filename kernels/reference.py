"""PyTorch references of the fused DiT block operations: the model's eager path and what the
Triton kernels beside them (adaln.py, rope.py, silu_gate.py, gated_residual.py, value_mix.py) are
tested against. Shapes as in megatron_video/model/block.py: activations [S, B, hidden],
per-sample modulation vectors [1, B, hidden], attention tensors [B, heads, S, head_dim]."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def adaln_modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:
    """LayerNorm without affine parameters, then AdaLN: LN(x) * (1 + scale) + shift."""
    return F.layer_norm(x, x.shape[-1:], eps=eps) * (1 + scale) + shift


def rope_rotate(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (i, i + d/2) of x [..., S, d] by angles [S, d/2]."""
    half = x.shape[-1] // 2
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def silu_gate(g: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The gated MLP's activation: silu(g) * u."""
    return F.silu(g) * u


def concat_silu_gate(a: torch.Tensor, g: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """[a, silu(g) * u] along the last dim: the parallel block's input to its output projection."""
    return torch.cat([a, silu_gate(g, u)], dim=-1)


def gated_residual(x: torch.Tensor, gate: torch.Tensor, y: torch.Tensor, offset: float) -> torch.Tensor:
    """x + (gate + c) * y: with c = 1/L a zero-initialised block is the identity yet gets gradient."""
    return x + (gate + offset) * y


def value_mix(v: torch.Tensor, v_first: torch.Tensor, lambdas: torch.Tensor) -> torch.Tensor:
    """The value residual: l1 * v + l2 * v_first, lambdas = (l1, l2)."""
    return lambdas[0] * v + lambdas[1] * v_first


def rope_qk(q: torch.Tensor, k: torch.Tensor, angles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ND-RoPE applied to q and k [B, heads, S, d]."""
    return rope_rotate(q, angles), rope_rotate(k, angles)
