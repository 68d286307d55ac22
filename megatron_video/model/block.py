"""DiT blocks on megatron's tensor-parallel linears: the parallel block and the sequential one.

Activations are [S, B, hidden] (megatron's order). Under sequence parallelism each rank holds
S / tp rows between the projections; the column-parallel input projection all-gathers them and the
row-parallel output projection reduce-scatters back. Norms carry no affine parameters (AdaLN supplies
scale and shift), and the per-sample modulation vectors enter the sequence-parallel region through
`copy_to_tensor_model_parallel_region`, whose backward sums their gradient over the TP group, so
every replicated parameter gets its full gradient on every rank without extra reductions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from megatron.core import parallel_state
from megatron.core.tensor_parallel.mappings import copy_to_tensor_model_parallel_region
from megatron.core.transformer import TransformerConfig
from megatron.core.utils import init_method_normal
from torch import nn

from megatron_video.model.attention import Attention, factorized_attention
from megatron_video.model.block_ops import call as block_op
from megatron_video.model.config import VideoDiTConfig
from megatron_video.model.embeddings import modulation_mlp
from megatron_video.model.fp8.layers import parallel_linear_classes
from megatron_video.model.fp8.settings import FP8_OFF, Fp8Settings
from megatron_video.model.packed_attention import packed_attention
from megatron_video.model.packing import PackLayout
from megatron_video.model.recompute import run_part
from megatron_video.model.rope import NDRope


@dataclass
class JointSequence:
    """What every block needs to know about the joint [text | video | padding] sequence."""

    positions: torch.Tensor  # [S, 3] normalised (t, h, w); zeros for text and padding
    key_mask: torch.Tensor | None  # [B, S] True = attend; None when every token is real
    text_len: int
    grid: tuple[int, int, int]
    # Under context parallelism: this rank's shard (positions above are the shard's) and how its
    # attention reaches the other shards (megatron_video.parallel.context_attention.ContextShard).
    context: Any = None
    # Packed rows (one pack per row, batch 1): where each sample lies, and the sample whose
    # conditioning modulates each of this rank's rows of the hidden state (model/packing.py).
    pack: PackLayout | None = None
    modulation_rows: torch.Tensor | None = None


def _column(in_dim: int, out_dim: int, config: TransformerConfig, fp8: Fp8Settings) -> nn.Module:
    # Unit-norm rows in expectation: the scale the sphere-constrained optimizer keeps them at.
    return parallel_linear_classes(fp8)[0](in_dim, out_dim, config=config, init_method=init_method_normal(
        in_dim ** -0.5), bias=False, gather_output=False, skip_bias_add=False, is_expert=False)


def _row(in_dim: int, out_dim: int, config: TransformerConfig, fp8: Fp8Settings) -> nn.Module:
    return parallel_linear_classes(fp8)[1](in_dim, out_dim, config=config, init_method=init_method_normal(
        in_dim ** -0.5), bias=False, input_is_parallel=True, skip_bias_add=False, is_expert=False)


class DiTBlock(nn.Module):
    """What both variants share: modulation, norm, RoPE, attention, value residual, residual offset."""

    modulations = 3

    def __init__(self, cfg: VideoDiTConfig, config: TransformerConfig, layer: int, fp8: Fp8Settings = FP8_OFF,
                 recompute: str = "none"):
        super().__init__()
        self.fp8, self.recompute = fp8, recompute
        tp = parallel_state.get_tensor_model_parallel_world_size()
        if cfg.heads % tp or cfg.mlp_hidden % tp:
            raise ValueError(f"heads ({cfg.heads}) and mlp_hidden ({cfg.mlp_hidden}) must divide by TP={tp}")
        self.layer = layer
        self.hidden, self.head_dim, self.mlp_hidden = cfg.hidden, cfg.head_dim, cfg.mlp_hidden
        self.local_heads, self.local_mlp = cfg.heads // tp, cfg.mlp_hidden // tp
        self.offset = cfg.offset
        self.sequence_parallel = config.sequence_parallel
        self.axis = ("spatial", "temporal")[layer % 2] if cfg.spatio_temporal else None
        self.modulation = modulation_mlp(cfg.hidden, cfg.adaln_lora_rank or cfg.hidden, self.modulations)
        self.norm_eps = 1e-6  # LayerNorm without affine parameters: AdaLN supplies scale and shift
        self.fused = cfg.fused_kernels  # Triton kernels for the ops in block_ops (on CUDA)
        self.rope = NDRope(cfg.head_dim, cfg.rope_w_min, cfg.rope_w_max, cfg.rope_zero_fraction, cfg.rope_seed + layer)
        self.attend = Attention(cfg.attention_backend, self.local_heads, cfg.head_dim)
        self.packed_attention = cfg.packed_attention
        # Layer 0 provides v_first; later layers mix it in with learned (l1, l2), 0.5 each at init.
        self.value_lambdas = nn.Parameter(torch.full((2,), 0.5)) if cfg.value_residual and layer > 0 else None

    def modulation_vectors(self, cond: torch.Tensor, shared: torch.Tensor | None,
                           rows: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Each [1, B, hidden]; or, for a packed row, [S, 1, hidden]: the modulation of the sample
        each of the hidden state's rows belongs to (`rows`, indices into cond [samples, ...])."""
        mod = self.modulation(cond)
        if shared is not None:
            mod = mod + shared
        if self.sequence_parallel:
            mod = copy_to_tensor_model_parallel_region(mod)
        mod = mod[None] if rows is None else mod[rows][:, None]
        return list(mod.chunk(self.modulations, dim=-1))

    def part(self, name: str, fn, *args):
        """fn(*args), recomputed in backward when train.recompute names this part."""
        return run_part(name, self.recompute, self.fp8.mode == "te", fn, *args)

    def modulate(self, x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        if shift.shape[0] > 1:  # per-row modulation [S, 1, h]: the kernels' batch axis carries the rows
            return block_op("adaln_modulate", self.fused, *(t.transpose(0, 1) for t in (x, shift, scale)),
                            self.norm_eps).transpose(0, 1)
        return block_op("adaln_modulate", self.fused, x, shift, scale, self.norm_eps)

    def residual(self, x: torch.Tensor, gate: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x + (gate + c) y, with gate [1, B, h] or per row [S, 1, h] (as in modulate)."""
        if gate.shape[0] > 1:
            return block_op("gated_residual", self.fused, *(t.transpose(0, 1) for t in (x, gate, y)),
                            self.offset).transpose(0, 1)
        return block_op("gated_residual", self.fused, x, gate, y, self.offset)

    def attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, seq: JointSequence,
                  v_first: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """q, k, v [S, B, local_hidden] -> attention output [S, B, local_hidden] and v_first."""
        s, b = q.shape[:2]
        q, k, v = (t.reshape(s, b, self.local_heads, self.head_dim).permute(1, 2, 0, 3) for t in (q, k, v))
        if v_first is None:
            v_first = v
        elif self.value_lambdas is not None:
            # Each rank sees only its heads: the backward all-reduce completes the lambdas' gradient.
            lambdas = copy_to_tensor_model_parallel_region(self.value_lambdas).to(v.dtype)
            v = block_op("value_mix", self.fused, v, v_first, lambdas)
        angles = self.rope.angles(seq.positions)
        q, k = block_op("rope_qk", self.fused, q, k, angles)
        if seq.context is None:
            a = self.local_attention(q, k, v, seq)
        else:
            a = seq.context.attend(q, k, v, self.local_attention, factorised=self.axis is not None)
        return a.permute(2, 0, 1, 3).reshape(s, b, self.local_heads * self.head_dim), v_first

    def local_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, seq: JointSequence) -> torch.Tensor:
        """Attention over the sequence `seq` describes, all of whose tokens q, k, v [B, heads, S, d] hold."""
        if seq.pack is not None:
            return packed_attention(self.packed_attention, self.attend, q, k, v, seq.key_mask, seq.pack, self.axis)
        if self.axis is None:
            return self.attend(q, k, v, seq.key_mask)
        return factorized_attention(self.attend, q, k, v, seq.key_mask, seq.text_len, seq.grid, self.axis)


class ParallelBlock(DiTBlock):
    """h = LN(x)(1+scale)+shift; [q,k,v,g,u] = h W_in; y = [attn, silu(g) u] W_out; x + (gate+c) y."""

    def __init__(self, cfg: VideoDiTConfig, config: TransformerConfig, layer: int, fp8: Fp8Settings = FP8_OFF,
                 recompute: str = "none"):
        super().__init__(cfg, config, layer, fp8, recompute)
        self.w_in = _column(cfg.hidden, 3 * cfg.hidden + 2 * cfg.mlp_hidden, config, fp8)
        self.w_out = _row(cfg.hidden + cfg.mlp_hidden, cfg.hidden, config, fp8)

    def tensor_parallel_layout(self) -> dict[str, tuple[int, list[int]]]:
        h, m = self.hidden, self.mlp_hidden
        return {"w_in.weight": (0, [h, h, h, m, m]), "w_out.weight": (1, [h, m])}

    def forward(self, x: torch.Tensor, cond: torch.Tensor, shared: torch.Tensor | None, seq: JointSequence,
                v_first: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        shift, scale, gate = self.modulation_vectors(cond, shared, seq.modulation_rows)
        proj, _ = self.w_in(self.modulate(x, shift, scale))
        lh = self.local_heads * self.head_dim
        q, k, v, g, u = proj.split([lh, lh, lh, self.local_mlp, self.local_mlp], dim=-1)
        a, v_first = self.part("attention", self.attention, q, k, v, seq, v_first)
        y, _ = self.w_out(self.part("mlp", block_op, "concat_silu_gate", self.fused, a, g, u))
        return self.residual(x, gate, y), v_first


class SequentialBlock(DiTBlock):
    """Attention sub-block then gated-MLP sub-block, each with its own modulation and projections."""

    modulations = 6

    def __init__(self, cfg: VideoDiTConfig, config: TransformerConfig, layer: int, fp8: Fp8Settings = FP8_OFF,
                 recompute: str = "none"):
        super().__init__(cfg, config, layer, fp8, recompute)
        self.qkv = _column(cfg.hidden, 3 * cfg.hidden, config, fp8)
        self.attn_out = _row(cfg.hidden, cfg.hidden, config, fp8)
        self.fc1 = _column(cfg.hidden, 2 * cfg.mlp_hidden, config, fp8)
        self.fc2 = _row(cfg.mlp_hidden, cfg.hidden, config, fp8)

    def tensor_parallel_layout(self) -> dict[str, tuple[int, list[int]]]:
        h, m = self.hidden, self.mlp_hidden
        return {"qkv.weight": (0, [h, h, h]), "attn_out.weight": (1, [h]),
                "fc1.weight": (0, [m, m]), "fc2.weight": (1, [m])}

    def forward(self, x: torch.Tensor, cond: torch.Tensor, shared: torch.Tensor | None, seq: JointSequence,
                v_first: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation_vectors(cond, shared, seq.modulation_rows)
        qkv, _ = self.qkv(self.modulate(x, shift1, scale1))
        a, v_first = self.part("attention", self.attention, *qkv.chunk(3, dim=-1), seq, v_first)
        y, _ = self.attn_out(a)
        x = self.residual(x, gate1, y)
        g, u = self.fc1(self.modulate(x, shift2, scale2))[0].chunk(2, dim=-1)
        y, _ = self.fc2(self.part("mlp", block_op, "silu_gate", self.fused, g, u))
        return self.residual(x, gate2, y), v_first


BLOCK_TYPES = {"parallel": ParallelBlock, "sequential": SequentialBlock}
