"""VideoDiT: latent video + text + timestep -> flow-matching velocity, on megatron-core layers.

Joint attention over one sequence [text tokens | video tokens | padding]: padding only appears under
sequence parallelism, to make S divisible by the TP size, and is masked out like padded text.
"""
from __future__ import annotations

from dataclasses import replace

import torch
from megatron.core import parallel_state
from megatron.core.enums import ModelType
from megatron.core.fp8_utils import get_fp8_context
from megatron.core.tensor_parallel.mappings import (
    gather_from_sequence_parallel_region,
    scatter_to_sequence_parallel_region,
)
from megatron.core.transformer import MegatronModule, TransformerConfig
from torch import nn

from megatron_video.model.block import BLOCK_TYPES, JointSequence
from megatron_video.model.config import VideoDiTConfig
from megatron_video.model.embeddings import (
    PooledTextEmbedding,
    TextProjection,
    TimestepEmbedding,
    modulation_mlp,
    position_features,
)
from megatron_video.model.fp8.layers import transformer_config_fields
from megatron_video.model.fp8.settings import FP8_OFF, Fp8Settings
from megatron_video.model.packing import PackLayout
from megatron_video.model.patchify import patch_grid, patchify, unpatchify
from megatron_video.model.recompute import run_part
from megatron_video.model.rope import video_positions
from megatron_video.model.sharded_state import video_dit_sharded_state_dict
from megatron_video.parallel.context_attention import ContextShard, context_parallel_groups
from megatron_video.parallel.pipeline import pack_rows, stage_layers, unpack_rows


class VideoDiT(MegatronModule):
    """The diffusion transformer, or one pipeline stage of it; build it with `build_model` (one
    model) or `build_model_chunks` (this rank's pipeline stages) once parallel_state is initialised.

    A stage holds the blocks `layers`; the first also the embeddings, the last the final layer.
    Every stage holds the conditioning (timestep MLP, pooled text MLP, shared AdaLN modulation) and
    recomputes it from the timesteps and text each stage receives: its parameters are marked `pipeline_parallel`, so
    megatron's finalize_model_grads sums their gradients over the pipeline stages, and `shared`
    beyond the first stage, so the gradient norm counts them once. The blocks' linear layers follow
    the FP8 mode `fp8`, and `recompute` (recompute.py) names what backward recomputes.
    """

    model_type = ModelType.encoder_or_decoder  # what megatron's schedules ask of every model
    share_embeddings_and_output_weights = False  # finalize_model_grads: no tied weights across stages

    def __init__(self, cfg: VideoDiTConfig, config: TransformerConfig, context_mode: str = "none",
                 layers: range | None = None, pre_process: bool = True, post_process: bool = True,
                 fp8: Fp8Settings = FP8_OFF, recompute: str = "none"):
        super().__init__(config)
        self.cfg = cfg
        self.fp8, self.recompute = fp8, recompute
        self.layers = layers if layers is not None else range(cfg.layers)
        self.pre_process, self.post_process = pre_process, post_process
        self.input_tensor: torch.Tensor | None = None
        # The groups context-parallel attention runs over (None without CP), from parallel_state.
        self.context = context_parallel_groups(context_mode)
        h = cfg.hidden
        block_type = BLOCK_TYPES[cfg.block]
        if pre_process:
            self.patch_embed = nn.Linear(cfg.patch_dim, h)
            self.text_proj = TextProjection(cfg.text_dim, h)
        self.time_embed = TimestepEmbedding(cfg.timestep_dim, h)
        self.pooled_text_embed = PooledTextEmbedding(cfg.text_dim, h) if cfg.pooled_text_conditioning else None
        # AdaLN-LoRA (NeMo VFM): one full-rank modulation shared by all blocks, plus a low-rank one per block.
        self.shared_modulation = (modulation_mlp(h, h, block_type.modulations) if cfg.adaln_lora_rank else None)
        self.blocks = nn.ModuleList(block_type(cfg, config, layer, fp8, recompute) for layer in self.layers)
        if post_process:
            self.final_norm = nn.LayerNorm(h, elementwise_affine=False, eps=1e-6)
            self.final_modulation = modulation_mlp(h, h, 2)
            # Not zero-initialised (unlike DiT): with zero here no block would get gradient on step one.
            self.final_proj = nn.Linear(h, cfg.patch_dim)
        if not (pre_process and post_process):
            for module in (self.time_embed, self.pooled_text_embed, self.shared_modulation):
                for param in module.parameters() if module is not None else ():
                    param.pipeline_parallel = True
                    # Counted once in the gradient norm (megatron's clipping skips `shared` params).
                    param.shared = not pre_process

    def tensor_parallel_layout(self) -> dict[str, tuple[int, list[int]]]:
        """Tensor-parallel parameter name -> (partition dim, fused segments); see tp_layout.py."""
        return {f"blocks.{i}.{name}": spec for i, block in enumerate(self.blocks)
                for name, spec in block.tensor_parallel_layout().items()}

    def sharded_state_dict(self, prefix: str = "", sharded_offsets: tuple = (), metadata: dict | None = None) -> dict:
        """For megatron's dist_checkpointing: layout-free keys (see sharded_state.py)."""
        return video_dit_sharded_state_dict(self, prefix)

    def set_input_tensor(self, input_tensor: torch.Tensor | list[torch.Tensor] | None) -> None:
        """What the previous pipeline stage sent (megatron's schedules call this before forward)."""
        self.input_tensor = input_tensor[0] if isinstance(input_tensor, list) else input_tensor

    def sequence_multiple(self) -> int:
        """The joint sequence is padded to a multiple of this: CP shards, then sequence-parallel
        (or, between pipeline stages, value-residual) rows split over the TP ranks."""
        cp = self.context.size if self.context is not None else 1
        split_by_tp = self.config.sequence_parallel or self.config.pipeline_model_parallel_size > 1
        return cp * (parallel_state.get_tensor_model_parallel_world_size() if split_by_tp else 1)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, text: torch.Tensor,
                text_mask: torch.Tensor, pack: PackLayout | None = None) -> torch.Tensor:
        """x [B, C, T, H, W], timesteps [B] in [0, 1], text [B, L, text_dim], text_mask [B, L] -> velocity like x.

        With `pack` (one packed row of samples of any shape, model/packing.py): x is the row's video
        tokens [1, N, patch_dim], text [1, samples * L, text_dim], text_mask [1, samples * L],
        timesteps [samples]; the velocity comes back as tokens [1, N, patch_dim].

        Every stage receives the same inputs; a stage that is not the last returns what the next
        stage needs (see stage_output) instead of the velocity.

        Under context parallelism every CP rank gets the same inputs and returns the whole output;
        in between it holds only its shard of the sequence. Each rank's backward reaches the
        parameters only through its own shard, so the parameter gradients of the CP ranks sum to the
        whole gradient (megatron's DDP reduces over the data x context group).
        """
        b = x.shape[0]
        if pack is None:
            grid = patch_grid(tuple(x.shape[2:]), self.cfg.patch)
            text_len, n = text.shape[1], grid[0] * grid[1] * grid[2]
            pad = (-(text_len + n)) % self.sequence_multiple()
            video = video_positions(grid, x.device)
            seq = JointSequence(
                positions=torch.cat([torch.zeros(text_len, 3, device=x.device, dtype=torch.float64), video,
                                     torch.zeros(pad, 3, device=x.device, dtype=torch.float64)]),
                key_mask=self._key_mask(text_mask, n, pad),
                text_len=text_len,
                grid=grid,
            )
        else:
            seq = self._packed_sequence(pack, text_mask, b)
        rows = slice(0, seq.positions.shape[0])
        if self.context is not None:
            shard = ContextShard(self.context, seq, rows.stop // self.context.size)
            rows = slice(shard.start, shard.start + shard.length)
            seq = replace(shard.local_view(), positions=seq.positions[rows], context=shard)
        if pack is not None:
            seq = replace(seq, modulation_rows=self._sequence_parallel_rows(pack.modulation_rows(x.device)[rows]))
        cond = self.conditioning(timesteps, text, text_mask, pack)
        shared = self.shared_modulation(cond) if self.shared_modulation is not None else None
        if self.pre_process:
            hidden = self.embed(x, text, video, pad, rows) if pack is None else self.embed_packed(x, text, pack, rows)
            v_first = None
        else:
            hidden, v_first = self.stage_input(rows.stop - rows.start, b)
        with get_fp8_context(self.config):  # TE's fp8_autocast under train.fp8=te, else nothing
            for block in self.blocks:
                hidden, v_first = run_part("block", self.recompute, self.fp8.mode == "te", block,
                                           hidden, cond, shared, seq, v_first)
        if not self.post_process:
            return self.stage_output(hidden, v_first)
        if self.config.sequence_parallel:
            # Every rank computes the same loss from the gathered output, so backward only splits.
            hidden = gather_from_sequence_parallel_region(hidden, tensor_parallel_output_grad=False)
        if pack is not None:
            return self.packed_output(hidden, cond, pack, rows).to(x.dtype)
        if self.context is None:
            out = self.final_layer(hidden[text_len:text_len + n], cond)
        else:  # the final layer on this rank's rows, then the whole sequence (backward: this rank's rows)
            out = gather_from_sequence_parallel_region(self.final_layer(hidden, cond), group=self.context.group,
                                                       tensor_parallel_output_grad=False)[text_len:text_len + n]
        return unpatchify(out.transpose(0, 1), self.cfg.patch, grid, self.cfg.in_channels).to(x.dtype)

    def conditioning(self, timesteps: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor,
                     pack: PackLayout | None) -> torch.Tensor:
        """The vector [B or samples, h] every AdaLN modulation reads: the timestep embedding, plus
        the pooled text embedding of each sample's own text under pooled_text_conditioning."""
        cond = self.time_embed(timesteps)
        if self.pooled_text_embed is None:
            return cond
        if pack is not None:  # one packed row: each segment's text tokens, padded to one length
            lengths = [segment.text_len for segment in pack.segments]
            text = nn.utils.rnn.pad_sequence(list(text[0].split(lengths)), batch_first=True)
            text_mask = nn.utils.rnn.pad_sequence(list(text_mask[0].split(lengths)), batch_first=True)
        return cond + self.pooled_text_embed(text, text_mask).to(cond.dtype)

    def embed(self, x: torch.Tensor, text: torch.Tensor, positions: torch.Tensor, pad: int,
              rows: slice) -> torch.Tensor:
        """The joint sequence's tokens [S, B, h] for this rank's `rows` (sequence-parallel split);
        `positions` [N, 3] are the video tokens' (video_positions of x's token grid)."""
        video = self.patch_embed(patchify(x, self.cfg.patch))
        if self.cfg.absolute_positions:
            video = video + self.position_embedding(positions, video.dtype)
        tokens = torch.cat([self.text_proj(text.to(video.dtype)), video], dim=1)
        if pad:
            tokens = torch.cat([tokens, tokens.new_zeros(x.shape[0], pad, tokens.shape[2])], dim=1)
        return self._rank_rows(tokens, rows)

    def embed_packed(self, video: torch.Tensor, text: torch.Tensor, pack: PackLayout, rows: slice) -> torch.Tensor:
        """A packed row's tokens [S, 1, h] for this rank's `rows`: each sample's text, then its video."""
        video = self.patch_embed(video)
        if self.cfg.absolute_positions:  # each sample's own positions, as it would have alone
            video = video + self.position_embedding(pack.positions(video.device)[pack.video_rows(video.device)],
                                                    video.dtype)
        tokens = torch.cat([self.text_proj(text.to(video.dtype)), video], dim=1)
        where = torch.cat([pack.text_rows(video.device), pack.video_rows(video.device)])
        return self._rank_rows(video.new_zeros(1, pack.length, video.shape[2]).index_copy(1, where, tokens), rows)

    def position_embedding(self, positions: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """absolute_positions' features [N, hidden] of the video tokens' positions [N, 3]."""
        return position_features(positions, self.cfg.hidden, self.cfg.rope_w_min, self.cfg.rope_w_max).to(dtype)

    def _rank_rows(self, tokens: torch.Tensor, rows: slice) -> torch.Tensor:
        # A plain slice: its backward hands this rank's rows their gradient and zeros elsewhere.
        hidden = tokens[:, rows].transpose(0, 1).contiguous()
        return scatter_to_sequence_parallel_region(hidden) if self.config.sequence_parallel else hidden

    def _packed_sequence(self, pack: PackLayout, text_mask: torch.Tensor, batch: int) -> JointSequence:
        if batch != 1:
            raise ValueError(f"a packed batch is one row (one pack per microbatch), got {batch}")
        if pack.length % self.sequence_multiple():
            raise ValueError(f"pack length {pack.length} must be a multiple of {self.sequence_multiple()} "
                             "(CP x TP under sequence parallelism): pack with that multiple")
        device = text_mask.device
        return JointSequence(positions=pack.positions(device),
                             key_mask=None if bool(text_mask.all()) else pack.key_mask(text_mask),
                             text_len=0, grid=(0, 0, 0), pack=pack)

    def _sequence_parallel_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """This tensor-parallel rank's part of `rows` under sequence parallelism (all of it otherwise)."""
        if not self.config.sequence_parallel:
            return rows
        tp = parallel_state.get_tensor_model_parallel_world_size()
        return rows.chunk(tp)[parallel_state.get_tensor_model_parallel_rank()]

    def packed_output(self, hidden: torch.Tensor, cond: torch.Tensor, pack: PackLayout, rows: slice) -> torch.Tensor:
        """The velocity tokens [1, N, patch_dim] of a packed row from the hidden rows [S, 1, h]
        of this rank (`rows`), each through the final layer modulated by its own sample."""
        samples, video = pack.modulation_rows(hidden.device), pack.video_rows(hidden.device)
        if self.context is None:
            out = self.final_layer(hidden[video], cond, samples[video])
        else:
            out = gather_from_sequence_parallel_region(self.final_layer(hidden, cond, samples[rows]),
                                                       group=self.context.group,
                                                       tensor_parallel_output_grad=False)[video]
        return out.transpose(0, 1)

    def carries_values(self) -> bool:
        """Whether the value residual's first-layer values travel to the next stage."""
        return self.cfg.value_residual and self.layers.stop < self.cfg.layers

    def stage_output(self, hidden: torch.Tensor, v_first: torch.Tensor) -> torch.Tensor:
        """[hidden rows | first-layer value rows] as one [rows, B, h] tensor for the next stage."""
        dtype = self.config.pipeline_dtype or hidden.dtype  # what the schedules' receive buffers hold
        if not self.carries_values():
            return hidden.to(dtype)
        # values [B, heads, S, d] as [S, B, heads, d]
        return pack_rows([hidden.to(dtype), v_first.permute(2, 0, 1, 3).to(dtype)], self.cfg.hidden)

    def stage_input(self, length: int, batch: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Split what the previous stage sent into the hidden state and the first-layer values."""
        tp = parallel_state.get_tensor_model_parallel_world_size()
        hidden_rows = length // tp if self.config.sequence_parallel else length
        hidden_shape = (hidden_rows, batch, self.cfg.hidden)
        if not self.cfg.value_residual:
            return self.input_tensor, None
        heads = self.cfg.heads // tp
        hidden, values = unpack_rows(self.input_tensor, [hidden_shape, (length, batch, heads, self.cfg.head_dim)])
        return hidden, values.permute(1, 2, 0, 3)

    def stage_rows(self, latent_shape: tuple[int, ...], text_len: int, pack: PackLayout | None = None) -> int:
        """Rows of the tensor a stage sends for latents [..., T, H, W] with `text_len` text tokens
        (for a packed row: its length)."""
        if pack is None:
            grid = patch_grid(tuple(latent_shape[-3:]), self.cfg.patch)
            tokens = text_len + grid[0] * grid[1] * grid[2]
        else:
            tokens = pack.length
        padded = tokens + (-tokens) % self.sequence_multiple()
        length = padded // (self.context.size if self.context is not None else 1)
        tp = parallel_state.get_tensor_model_parallel_world_size()
        rows = length // tp if self.config.sequence_parallel else length
        return rows + (length // tp if self.cfg.value_residual else 0)

    def final_layer(self, hidden: torch.Tensor, cond: torch.Tensor,
                    samples: torch.Tensor | None = None) -> torch.Tensor:
        """[S, B, h] -> [S, B, patch_dim]: the AdaLN-modulated output projection of each token
        (modulated per row by cond[samples] for a packed row)."""
        mod = self.final_modulation(cond)
        shift, scale = (mod[None] if samples is None else mod[samples][:, None]).chunk(2, dim=-1)
        return self.final_proj(self.final_norm(hidden) * (1 + scale) + shift)

    @staticmethod
    def _key_mask(text_mask: torch.Tensor, video_tokens: int, pad: int) -> torch.Tensor | None:
        if pad == 0 and bool(text_mask.all()):
            return None  # unmasked attention lets the fastest kernels (cuDNN, flash) run
        b = text_mask.shape[0]
        return torch.cat([text_mask.bool(), text_mask.new_ones(b, video_tokens, dtype=torch.bool),
                          text_mask.new_zeros(b, pad, dtype=torch.bool)], dim=1)


def megatron_config(cfg: VideoDiTConfig, sequence_parallel: bool = False,
                    params_dtype: torch.dtype = torch.float32, context_mode: str = "none",
                    fp8: Fp8Settings = FP8_OFF) -> TransformerConfig:
    """The megatron TransformerConfig carrying this process's TP, CP and PP sizes, the
    sequence-parallel flag and (train.fp8=te) Transformer Engine's FP8 recipe.

    parallel_state records group sizes but not whether sequence parallelism is on, so the caller
    passes it (ParallelConfig.sequence_parallel).
    """
    tp = parallel_state.get_tensor_model_parallel_world_size()
    cp = parallel_state.get_context_parallel_world_size()
    pp = parallel_state.get_pipeline_model_parallel_world_size()
    config = TransformerConfig(
        num_layers=cfg.layers,
        hidden_size=cfg.hidden,
        num_attention_heads=cfg.heads,
        ffn_hidden_size=cfg.mlp_hidden,
        tensor_model_parallel_size=tp,
        context_parallel_size=cp,
        cp_comm_type=CP_COMM_TYPES.get(context_mode) if cp > 1 else None,
        pipeline_model_parallel_size=pp,
        virtual_pipeline_model_parallel_size=parallel_state.get_virtual_pipeline_model_parallel_world_size(),
        pipeline_dtype=params_dtype if pp > 1 else None,
        sequence_parallel=sequence_parallel and tp > 1,
        use_cpu_initialization=not torch.cuda.is_available(),
        params_dtype=params_dtype,
        **transformer_config_fields(fp8),
    )
    # Timestep conditioning lives on every pipeline stage: finalize_model_grads sums its gradients.
    config.has_cond_embedder = pp > 1
    return config


# megatron's names for the context-parallel communication of each mode (TE reads the same names).
CP_COMM_TYPES = {"ulysses": "a2a", "ring": "p2p", "usp": "a2a+p2p", "te": "p2p"}


def build_model(cfg: VideoDiTConfig, sequence_parallel: bool = False,
                params_dtype: torch.dtype = torch.float32, context_mode: str = "none",
                fp8: Fp8Settings = FP8_OFF, recompute: str = "none") -> VideoDiT:
    """Build VideoDiT for this rank (parallel_state must be initialised by init_distributed).

    `context_mode` is the resolved context-parallel attention (Layout.context_mode): ulysses, ring,
    usp or te; "none" without context parallelism. The linear layers follow the FP8 mode `fp8`;
    backward recomputes `recompute` (recompute.py).
    """
    (model,) = build_model_chunks(cfg, sequence_parallel, params_dtype, context_mode, fp8, recompute,
                                  pipeline_allowed=False)
    return model


def build_model_chunks(cfg: VideoDiTConfig, sequence_parallel: bool = False,
                       params_dtype: torch.dtype = torch.float32, context_mode: str = "none",
                       fp8: Fp8Settings = FP8_OFF, recompute: str = "none",
                       pipeline_allowed: bool = True) -> list[VideoDiT]:
    """This rank's model chunks: one pipeline stage, or several under the interleaved schedule."""
    if not parallel_state.model_parallel_is_initialized():
        raise RuntimeError("build_model needs megatron parallel_state: call init_distributed first")
    pp = parallel_state.get_pipeline_model_parallel_world_size()
    chunks = parallel_state.get_virtual_pipeline_model_parallel_world_size() or 1
    if pp > 1 and not pipeline_allowed:
        raise RuntimeError("a whole VideoDiT was asked for under pipeline parallelism: use build_model_chunks")
    if context_mode == "te":
        cfg = replace(cfg, attention_backend="te")
    config = megatron_config(cfg, sequence_parallel, params_dtype, context_mode, fp8)
    rank = parallel_state.get_pipeline_model_parallel_rank()
    models = []
    for chunk in range(chunks):
        layers = stage_layers(cfg.layers, pp, chunks, rank, chunk)
        model = VideoDiT(cfg, config, context_mode, layers, pre_process=layers.start == 0,
                         post_process=layers.stop == cfg.layers, fp8=fp8, recompute=recompute)
        if context_mode == "te" and model.context is not None:
            # UNVERIFIED here (no TE on the CPU or the GPU test machine): TE's DotProductAttention
            # runs its own ring (cp_comm_type "p2p") over the CP group when given it.
            for block in model.blocks:
                block.attend.te_attention.set_context_parallel_group(
                    model.context.group, parallel_state.get_context_parallel_global_ranks(), torch.cuda.Stream(),
                    CP_COMM_TYPES["te"])
        # megatron's layers follow params_dtype; the plain torch ones follow here
        models.append(model.to(params_dtype))
    if pp > 1:
        share_conditioning(models)
    return models


@torch.no_grad()
def share_conditioning(models: list[VideoDiT]) -> None:
    """Start every stage's copy of the conditioning equal to the first stage's: each stage drew its
    copy at init from a different point of the RNG stream (the first stage builds its embeddings
    before it), and the same gradients keep equal copies equal, which one layout-free checkpoint
    entry relies on."""
    first_rank = parallel_state.get_pipeline_model_parallel_first_rank()
    group = parallel_state.get_pipeline_model_parallel_group()
    shared = [[p for p in model.parameters() if getattr(p, "pipeline_parallel", False)] for model in models]
    for param in shared[0]:
        torch.distributed.broadcast(param.data, first_rank, group=group)
    for params in shared[1:]:  # this rank's other chunks (interleaved schedule)
        for param, source in zip(params, shared[0], strict=True):
            param.copy_(source)
