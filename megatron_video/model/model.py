"""VideoDiT: latent video + text + timestep -> flow-matching velocity, on megatron-core layers.

Joint attention over one sequence [text tokens | video tokens | padding]: padding only appears under
sequence parallelism, to make S divisible by the TP size, and is masked out like padded text.
"""
from __future__ import annotations

from dataclasses import replace

import torch
from megatron.core import parallel_state
from megatron.core.tensor_parallel.mappings import (
    gather_from_sequence_parallel_region,
    scatter_to_sequence_parallel_region,
)
from megatron.core.transformer import MegatronModule, TransformerConfig
from torch import nn

from megatron_video.model.block import BLOCK_TYPES, JointSequence
from megatron_video.model.config import VideoDiTConfig
from megatron_video.model.embeddings import TextProjection, TimestepEmbedding, modulation_mlp
from megatron_video.model.patchify import patch_grid, patchify, unpatchify
from megatron_video.model.rope import video_positions
from megatron_video.parallel.context_attention import ContextShard, context_parallel_groups


class VideoDiT(MegatronModule):
    """The diffusion transformer; build it with `build_model` once parallel_state is initialised."""

    def __init__(self, cfg: VideoDiTConfig, config: TransformerConfig, context_mode: str = "none"):
        super().__init__(config)
        self.cfg = cfg
        # The groups context-parallel attention runs over (None without CP), from parallel_state.
        self.context = context_parallel_groups(context_mode)
        h = cfg.hidden
        block_type = BLOCK_TYPES[cfg.block]
        self.patch_embed = nn.Linear(cfg.patch_dim, h)
        self.text_proj = TextProjection(cfg.text_dim, h)
        self.time_embed = TimestepEmbedding(cfg.timestep_dim, h)
        # AdaLN-LoRA (NeMo VFM): one full-rank modulation shared by all blocks, plus a low-rank one per block.
        self.shared_modulation = (modulation_mlp(h, h, block_type.modulations) if cfg.adaln_lora_rank else None)
        self.blocks = nn.ModuleList(block_type(cfg, config, layer) for layer in range(cfg.layers))
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
        """x [B, C, T, H, W], timesteps [B] in [0, 1], text [B, L, text_dim], text_mask [B, L] -> velocity like x.

        Under context parallelism every CP rank gets the same inputs and returns the whole output;
        in between it holds only its shard of the sequence. Each rank's backward reaches the
        parameters only through its own shard, so the parameter gradients of the CP ranks sum to the
        whole gradient (megatron's DDP reduces over the data x context group).
        """
        b = x.shape[0]
        grid = patch_grid(tuple(x.shape[2:]), self.cfg.patch)
        video = self.patch_embed(patchify(x, self.cfg.patch))
        tokens = torch.cat([self.text_proj(text.to(video.dtype)), video], dim=1)
        text_len, n = text.shape[1], video.shape[1]
        cp = self.context.size if self.context is not None else 1
        tp = parallel_state.get_tensor_model_parallel_world_size() if self.config.sequence_parallel else 1
        pad = (-tokens.shape[1]) % (cp * tp)
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
        if self.context is not None:
            shard = ContextShard(self.context, seq, tokens.shape[1] // cp)
            rows = slice(shard.start, shard.start + shard.length)
            # A plain slice: its backward hands this rank's rows their gradient and zeros elsewhere.
            tokens = tokens[:, rows]
            seq = replace(shard.local_view(), positions=seq.positions[rows], context=shard)
        cond = self.time_embed(timesteps)
        shared = self.shared_modulation(cond) if self.shared_modulation is not None else None
        hidden = tokens.transpose(0, 1).contiguous()  # [S, B, h]
        if self.config.sequence_parallel:
            hidden = scatter_to_sequence_parallel_region(hidden)
        v_first: torch.Tensor | None = None
        for block in self.blocks:
            hidden, v_first = block(hidden, cond, shared, seq, v_first)
        if self.config.sequence_parallel:
            # Every rank computes the same loss from the gathered output, so backward only splits.
            hidden = gather_from_sequence_parallel_region(hidden, tensor_parallel_output_grad=False)
        if self.context is None:
            out = self.final_layer(hidden[text_len:text_len + n], cond)
        else:  # the final layer on this rank's rows, then the whole sequence (backward: this rank's rows)
            out = gather_from_sequence_parallel_region(self.final_layer(hidden, cond), group=self.context.group,
                                                       tensor_parallel_output_grad=False)[text_len:text_len + n]
        return unpatchify(out.transpose(0, 1), self.cfg.patch, grid, self.cfg.in_channels).to(x.dtype)

    def final_layer(self, hidden: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """[S, B, h] -> [S, B, patch_dim]: the AdaLN-modulated output projection of each token."""
        shift, scale = self.final_modulation(cond)[None].chunk(2, dim=-1)
        return self.final_proj(self.final_norm(hidden) * (1 + scale) + shift)

    @staticmethod
    def _key_mask(text_mask: torch.Tensor, video_tokens: int, pad: int) -> torch.Tensor | None:
        if pad == 0 and bool(text_mask.all()):
            return None  # unmasked attention lets the fastest kernels (cuDNN, flash) run
        b = text_mask.shape[0]
        return torch.cat([text_mask.bool(), text_mask.new_ones(b, video_tokens, dtype=torch.bool),
                          text_mask.new_zeros(b, pad, dtype=torch.bool)], dim=1)


def megatron_config(cfg: VideoDiTConfig, sequence_parallel: bool = False,
                    params_dtype: torch.dtype = torch.float32, context_mode: str = "none") -> TransformerConfig:
    """The megatron TransformerConfig carrying this process's TP and CP sizes and the sequence-parallel flag.

    parallel_state records group sizes but not whether sequence parallelism is on, so the caller
    passes it (ParallelConfig.sequence_parallel).
    """
    tp = parallel_state.get_tensor_model_parallel_world_size()
    cp = parallel_state.get_context_parallel_world_size()
    return TransformerConfig(
        num_layers=cfg.layers,
        hidden_size=cfg.hidden,
        num_attention_heads=cfg.heads,
        ffn_hidden_size=cfg.mlp_hidden,
        tensor_model_parallel_size=tp,
        context_parallel_size=cp,
        cp_comm_type=CP_COMM_TYPES.get(context_mode) if cp > 1 else None,
        sequence_parallel=sequence_parallel and tp > 1,
        use_cpu_initialization=not torch.cuda.is_available(),
        params_dtype=params_dtype,
    )


# megatron's names for the context-parallel communication of each mode (TE reads the same names).
CP_COMM_TYPES = {"ulysses": "a2a", "ring": "p2p", "usp": "a2a+p2p", "te": "p2p"}


def build_model(cfg: VideoDiTConfig, sequence_parallel: bool = False,
                params_dtype: torch.dtype = torch.float32, context_mode: str = "none") -> VideoDiT:
    """Build VideoDiT for this rank (parallel_state must be initialised by init_distributed).

    `context_mode` is the resolved context-parallel attention (Layout.context_mode): ulysses, ring,
    usp or te; "none" without context parallelism.
    """
    if not parallel_state.model_parallel_is_initialized():
        raise RuntimeError("build_model needs megatron parallel_state: call init_distributed first")
    if context_mode == "te":
        cfg = replace(cfg, attention_backend="te")
    model = VideoDiT(cfg, megatron_config(cfg, sequence_parallel, params_dtype, context_mode), context_mode)
    if context_mode == "te" and model.context is not None:
        # UNVERIFIED here (no TE on the CPU or the GPU test machine): TE's DotProductAttention runs
        # its own ring (cp_comm_type "p2p") over the CP group when given it.
        for block in model.blocks:
            block.attend.te_attention.set_context_parallel_group(
                model.context.group, parallel_state.get_context_parallel_global_ranks(), torch.cuda.Stream(),
                CP_COMM_TYPES["te"])
    return model.to(params_dtype)  # megatron's layers follow params_dtype; the plain torch ones follow here
