"""Training FLOPs of VideoDiT per sample, counted from the config (matmuls and attention).

Counts 2 FLOPs per multiply-add of every Linear and of attention's q k^T and (softmax) v products;
elementwise work (norms, RoPE, softmax, gating) is left out, as in the usual MFU convention.
Training = forward + backward = 3 x forward.
"""
from __future__ import annotations

import torch

from megatron_video.model.config import VideoDiTConfig
from megatron_video.model.patchify import patch_grid


def attention_flops(cfg: VideoDiTConfig, grid: tuple[int, int, int], text_len: int, layer: int) -> float:
    """Forward FLOPs of one layer's score and value products over the joint sequence."""
    h = cfg.hidden
    gt, gh, gw = grid
    n = gt * gh * gw
    s = text_len + n
    if not cfg.spatio_temporal:
        return 4.0 * h * s * s
    text_queries = 4.0 * h * text_len * s
    if layer % 2 == 0:  # spatial: each frame's tokens see the frame and the text
        return text_queries + 4.0 * h * n * (text_len + gh * gw)
    return text_queries + 4.0 * h * n * gt  # temporal: each location sees its own time line


def forward_flops(cfg: VideoDiTConfig, latent_shape: tuple[int, int, int, int], text_len: int) -> float:
    _, t, hgt, wid = latent_shape
    return grid_forward_flops(cfg, patch_grid((t, hgt, wid), cfg.patch), text_len)


def grid_forward_flops(cfg: VideoDiTConfig, grid: tuple[int, int, int], text_len: int) -> float:
    """Forward FLOPs of one sample whose video tokens form `grid` (frames, rows, columns)."""
    n = grid[0] * grid[1] * grid[2]
    s = text_len + n
    h, m = cfg.hidden, cfg.mlp_hidden
    mods = 3 if cfg.block == "parallel" else 6
    inner = cfg.adaln_lora_rank or h
    flops = 2.0 * n * cfg.patch_dim * h  # patch embedding
    flops += 2.0 * text_len * (cfg.text_dim * h + h * h)  # text projection
    flops += 2.0 * (cfg.timestep_dim * h + h * h)  # timestep MLP
    if cfg.pooled_text_conditioning:
        flops += 2.0 * (cfg.text_dim * h + h * h)  # pooled text MLP
    if cfg.adaln_lora_rank:
        flops += 2.0 * (h * h + h * mods * h)  # shared modulation
    for layer in range(cfg.layers):
        flops += 2.0 * (h * inner + inner * mods * h)  # block modulation
        flops += 2.0 * s * (h * (3 * h + 2 * m) + (h + m) * h)  # projections (same in both block types)
        flops += attention_flops(cfg, grid, text_len, layer)
    flops += 2.0 * (h * h + h * 2 * h)  # final modulation
    flops += 2.0 * n * h * cfg.patch_dim  # final projection
    return flops


def model_flops(cfg: VideoDiTConfig, latent_shape: tuple[int, int, int, int], text_len: int) -> float:
    """Training FLOPs (forward + backward) for one sample of latent (C, T, H, W) and text_len tokens."""
    return 3.0 * forward_flops(cfg, latent_shape, text_len)


def batch_model_flops(cfg: VideoDiTConfig, noised: torch.Tensor, text_len: int, pack=None) -> float:
    """Training FLOPs of one microbatch: noised latents [B, C, T, H, W] with text_len text tokens, or a
    packed row (`pack`, a model.packing.PackLayout), each of whose samples attends only to itself
    (its padding does no useful work)."""
    if pack is None:
        return noised.shape[0] * model_flops(cfg, tuple(noised.shape[1:]), text_len)
    return sum(3.0 * grid_forward_flops(cfg, s.grid, s.text_len) for s in pack.segments)


# Dense bf16 peak per GPU (TFLOP/s), by device name: the denominator of MFU.
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "H800": 989.0, "B200": 2250.0, "A100": 312.0}


def peak_tflops(device: torch.device) -> float | None:
    """The GPU's dense bf16 peak, or None (off CUDA, or a GPU not in PEAK_TFLOPS)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_TFLOPS.items() if key in name), None)
