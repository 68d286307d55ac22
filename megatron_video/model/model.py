"""VideoDiT: latent video + text + timestep -> flow-matching velocity, on megatron-core layers.

Joint attention over one sequence [text tokens | video tokens | padding]: padding only appears under
sequence parallelism, to make S divisible by the TP size, and is masked out like padded text.
"""
from __future__ import annotations

import torch
from megatron.core import parallel_state
from megatron.core.fp8_utils import get_fp8_context
from megatron.core.tensor_parallel.mappings import (
    gather_from_sequence_parallel_region,
    scatter_to_sequence_parallel_region,
)
from megatron.core.transformer import MegatronModule, TransformerConfig
from torch import nn

from megatron_video.model.block import BLOCK_TYPES, JointSequence
from megatron_video.model.config import VideoDiTConfig
from megatron_video.model.embeddings import TextProjection, TimestepEmbedding, modulation_mlp
from megatron_video.model.fp8.layers import transformer_config_fields
from megatron_video.model.fp8.settings import FP8_OFF, Fp8Settings
from megatron_video.model.patchify import patch_grid, patchify, unpatchify
from megatron_video.model.recompute import run_part
from megatron_video.model.rope import video_positions


class VideoDiT(MegatronModule):
    """The diffusion transformer; build it with `build_model` once parallel_state is initialised."""

    def __init__(self, cfg: VideoDiTConfig, config: TransformerConfig, fp8: Fp8Settings = FP8_OFF,
                 recompute: str = "none"):
        super().__init__(config)
        self.cfg = cfg
        self.fp8, self.recompute = fp8, recompute
        h = cfg.hidden
        block_type = BLOCK_TYPES[cfg.block]
        self.patch_embed = nn.Linear(cfg.patch_dim, h)
        self.text_proj = TextProjection(cfg.text_dim, h)
        self.time_embed = TimestepEmbedding(cfg.timestep_dim, h)
        # AdaLN-LoRA (NeMo VFM): one full-rank modulation shared by all blocks, plus a low-rank one per block.
        self.shared_modulation = (modulation_mlp(h, h, block_type.modulations) if cfg.adaln_lora_rank else None)
        self.blocks = nn.ModuleList(block_type(cfg, config, layer, fp8, recompute) for layer in range(cfg.layers))
        self.final_norm = nn.LayerNorm(h, elementwise_affine=False, eps=1e-6)
        self.final_modulation = modulation_mlp(h, h, 2)
        # Not zero-initialised (unlike DiT): with zero here no block would get gradient on step one.
        self.final_proj = nn.Linear(h, cfg.patch_dim)

    def tensor_parallel_layout(self) -> dict[str, tuple[int, list[int]]]:
        """Tensor-parallel parameter name -> (partition dim, fused segments); see tp_layout.py."""
        return {f"blocks.{i}.{name}": spec for i, block in enumerate(self.blocks)
                for name, spec in block.tensor_parallel_layout().items()}

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, text: torch.Tensor,
                text_mask: torch.Tensor) -> torch.Tensor:
        """x [B, C, T, H, W], timesteps [B] in [0, 1], text [B, L, text_dim], text_mask [B, L] -> velocity like x."""
        b = x.shape[0]
        grid = patch_grid(tuple(x.shape[2:]), self.cfg.patch)
        video = self.patch_embed(patchify(x, self.cfg.patch))
        tokens = torch.cat([self.text_proj(text.to(video.dtype)), video], dim=1)
        text_len, n = text.shape[1], video.shape[1]
        tp = parallel_state.get_tensor_model_parallel_world_size()
        pad = (-tokens.shape[1]) % tp if self.config.sequence_parallel else 0
        if pad:
            tokens = torch.cat([tokens, tokens.new_zeros(b, pad, tokens.shape[2])], dim=1)
        seq = JointSequence(
            positions=torch.cat([torch.zeros(text_len, 3, device=x.device, dtype=torch.float64),
                                 video_positions(grid, x.device),
                                 torch.zeros(pad, 3, device=x.device, dtype=torch.float64)]),
            key_mask=self._key_mask(text_mask, n, pad),
            text_len=text_len,
            grid=grid,
        )
        cond = self.time_embed(timesteps)
        shared = self.shared_modulation(cond) if self.shared_modulation is not None else None
        hidden = tokens.transpose(0, 1).contiguous()  # [S, B, h]
        if self.config.sequence_parallel:
            hidden = scatter_to_sequence_parallel_region(hidden)
        v_first: torch.Tensor | None = None
        with get_fp8_context(self.config):  # TE's fp8_autocast under train.fp8=te, else nothing
            for block in self.blocks:
                hidden, v_first = run_part("block", self.recompute, self.fp8.mode == "te", block,
                                           hidden, cond, shared, seq, v_first)
        if self.config.sequence_parallel:
            # Every rank computes the same loss from the gathered output, so backward only splits.
            hidden = gather_from_sequence_parallel_region(hidden, tensor_parallel_output_grad=False)
        video = hidden[text_len:text_len + n].transpose(0, 1)
        shift, scale = self.final_modulation(cond)[:, None].chunk(2, dim=-1)
        out = self.final_proj(self.final_norm(video) * (1 + scale) + shift)
        return unpatchify(out, self.cfg.patch, grid, self.cfg.in_channels).to(x.dtype)

    @staticmethod
    def _key_mask(text_mask: torch.Tensor, video_tokens: int, pad: int) -> torch.Tensor | None:
        if pad == 0 and bool(text_mask.all()):
            return None  # unmasked attention lets the fastest kernels (cuDNN, flash) run
        b = text_mask.shape[0]
        return torch.cat([text_mask.bool(), text_mask.new_ones(b, video_tokens, dtype=torch.bool),
                          text_mask.new_zeros(b, pad, dtype=torch.bool)], dim=1)


def megatron_config(cfg: VideoDiTConfig, sequence_parallel: bool = False,
                    params_dtype: torch.dtype = torch.float32, fp8: Fp8Settings = FP8_OFF) -> TransformerConfig:
    """The megatron TransformerConfig carrying this process's TP size, the sequence-parallel flag and
    (train.fp8=te) Transformer Engine's FP8 recipe.

    parallel_state records group sizes but not whether sequence parallelism is on, so the caller
    passes it (ParallelConfig.sequence_parallel).
    """
    tp = parallel_state.get_tensor_model_parallel_world_size()
    return TransformerConfig(
        num_layers=cfg.layers,
        hidden_size=cfg.hidden,
        num_attention_heads=cfg.heads,
        ffn_hidden_size=cfg.mlp_hidden,
        tensor_model_parallel_size=tp,
        sequence_parallel=sequence_parallel and tp > 1,
        use_cpu_initialization=not torch.cuda.is_available(),
        params_dtype=params_dtype,
        **transformer_config_fields(fp8),
    )


def build_model(cfg: VideoDiTConfig, sequence_parallel: bool = False, params_dtype: torch.dtype = torch.float32,
                fp8: Fp8Settings = FP8_OFF, recompute: str = "none") -> VideoDiT:
    """Build VideoDiT for this rank (parallel_state must be initialised by init_distributed), its
    linear layers for the FP8 mode, recomputing `recompute` (recompute.py) in backward."""
    if not parallel_state.model_parallel_is_initialized():
        raise RuntimeError("build_model needs megatron parallel_state: call init_distributed first")
    model = VideoDiT(cfg, megatron_config(cfg, sequence_parallel, params_dtype, fp8), fp8, recompute)
    return model.to(params_dtype)  # megatron's layers follow params_dtype; the plain torch ones follow here
