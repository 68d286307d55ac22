"""Activation memory of VideoDiT from the tensors its modules save for backward.

Each entry below is one tensor autograd keeps between forward and backward in the real model
(megatron_video/model/block.py, model.py), with its element count and bytes per element:

- `compute` bytes: matmul outputs and everything downstream of them (bf16 under autocast on GPUs,
  fp32 on CPU);
- `norm` bytes: LayerNorm's input and output and the modulated input of W_in, which CUDA autocast
  keeps in fp32 (layer_norm runs in fp32 and `norm * (1 + scale) + shift` promotes to it);
- fixed: attention's log-sum-exp and the norm statistics are fp32 whatever the precision.

With model.fused_kernels on (the CUDA path; the plan is of GPUs, so it follows the flag) the block's
elementwise ops are the autograd Functions of kernels/ (megatron_video/model/block_ops.py), which
save less: the norm's input and statistics (not its output), the modulation MLP's output (scale and
gate are views of it, instead of the references' own (1 + scale) and (gate + c)), RoPE's fp32 angles
(not cos and sin), g and u (not silu(g)). Off CUDA block_ops runs the PyTorch references whatever the
flag, so a plan of a CPU run says fused_kernels=false. The fused fp32 accounting is checked to the
byte on CPU with the kernels interpreted; its bf16 bytes are an estimate resting on one assumption:
the Functions are not autocast ops (no custom_fwd), so they save their inputs as given, and those are
bf16 (the residual stream starts as autocast matmul outputs and every fused op writes its output in
its input's dtype), hence `compute` bytes where the references' autocast LayerNorm keeps fp32 copies.
Left out as negligible: value_mix's bf16 copy of its two lambdas and the attention kernel's RNG state.

Views share storage (q, k, g, u are slices of W_in's output): the output is counted once. Under
sequence parallelism the tensors outside the TP region hold S / tp rows; under context parallelism
every sequence dimension is S / cp. Recompute and FP8 change what is kept; the modes the project has
not built yet are estimates of what the standard implementations keep (see `RECOMPUTE`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from megatron_video.model.config import VideoDiTConfig
from megatron_video.plan.parameters import modulations_per_block

FP32 = 4
# none: keep everything. selective: recompute the cheap elementwise parts (norm + modulation, RoPE,
# the gated activation) from the block input, keep matmul and attention outputs. full: keep only
# each block's input; one block's activations are recomputed at a time during backward.
RECOMPUTE = ("none", "selective", "full")


@dataclass(frozen=True)
class Precision:
    name: str
    compute: int  # bytes per element of matmul outputs and the residual stream
    norm: int  # bytes of the LayerNorm input/output and W_in's input
    matmul_input: int  # bytes of the saved inputs of W_in and W_out (1 when FP8 keeps them quantised)
    weight_copy: int  # bytes per parameter of the low-precision weight copies autocast/FP8 makes (0: none)


PRECISIONS = {
    "fp32": Precision("fp32", FP32, FP32, FP32, 0),
    "bf16": Precision("bf16", 2, FP32, 0, 2),  # matmul_input 0: the input keeps its own dtype
    "fp8": Precision("fp8", 2, FP32, 1, 1),
}


@dataclass(frozen=True)
class Shape:
    """What one GPU sees of a micro batch: joint sequence S (text + video tokens), video tokens n."""

    batch: int
    sequence: int
    video_tokens: int
    text_tokens: int
    tensor: int = 1
    context: int = 1
    sequence_parallel: bool = False

    @property
    def local_sequence(self) -> int:
        """Rows of the attention region on this GPU (S / cp; SP pads S to a multiple of tp first)."""
        padded = math.ceil(self.sequence / self.tensor) * self.tensor if self.sequence_parallel else self.sequence
        return math.ceil(padded / self.context)

    @property
    def stream_sequence(self) -> int:
        """Rows of the residual stream on this GPU: S / (cp * tp) under SP, else S / cp."""
        return self.local_sequence // self.tensor if self.sequence_parallel else self.local_sequence


@dataclass(frozen=True)
class Saved:
    name: str
    elements: int
    bytes_per_element: int

    @property
    def bytes(self) -> int:
        return self.elements * self.bytes_per_element


def _matmul_input(precision: Precision, own: int) -> int:
    return precision.matmul_input or own


def stream_bytes(precision: Precision, fused: bool) -> int:
    """Bytes per element of the norm's saved input (and its gradient). The reference LayerNorm is an
    autocast fp32 op, so autocast saves an fp32 copy of the stream; the fused kernel saves the stream
    itself, whose dtype is that of the embeddings' matmul outputs (`compute`)."""
    return precision.compute if fused else precision.norm


def _modulation(cfg: VideoDiTConfig, b: int, c: int, fused: bool) -> list[Saved]:
    h = cfg.hidden
    if fused:  # the kernels save scale and gate as views of the modulation MLP's whole output
        return [Saved("modulation vectors (per sample)", modulations_per_block(cfg) * b * h, c)]
    # The references save their own (1 + scale) and (gate + c): two per norm and residual pair.
    saved = [Saved("modulation scale and gate (per sample)", 2 * b * h, c)]
    if cfg.block == "sequential":
        saved.append(Saved("modulation of the MLP (per sample)", 2 * b * h, c))
    return saved


def _norm(prefix: str, rows: int, b: int, h: int, precision: Precision, fused: bool) -> list[Saved]:
    """LayerNorm + modulation: its input and statistics, and (reference only) the normalised output."""
    saved = [Saved(f"{prefix} input", rows * b * h, stream_bytes(precision, fused)),
             Saved(f"{prefix} statistics", 2 * rows * b, FP32)]
    if not fused:
        saved.append(Saved(f"{prefix} output", rows * b * h, precision.norm))
    return saved


def block_saved(cfg: VideoDiTConfig, shape: Shape, precision: Precision, layer: int,
                fused: bool = False) -> list[Saved]:
    """The tensors one block keeps for backward with nothing recomputed; `fused`: the block ops are
    kernels/' autograd Functions (model.fused_kernels on CUDA), else the PyTorch references."""
    if cfg.spatio_temporal:
        raise ValueError("the planner models joint attention only (model.spatio_temporal=false)")
    h, m, t = cfg.hidden, cfg.mlp_hidden, shape.tensor
    b, s, rows = shape.batch, shape.local_sequence, shape.stream_sequence
    c = precision.compute
    inner = cfg.adaln_lora_rank or h
    # The modulated norm output W_in / fc1 take: fp32 from the reference (LayerNorm's fp32 output times
    # the modulation promotes), the stream's dtype from the fused kernel.
    modulated = stream_bytes(precision, fused)
    saved = [Saved("modulation MLP (per sample)", 2 * b * inner, c), *_modulation(cfg, b, c, fused),
             *_norm("norm", rows, b, h, precision, fused)]
    if fused:  # the kernel keeps the fp32 angles [S, d/2] and forms cos and sin in registers
        rope = Saved("RoPE cos/sin tables", s * cfg.head_dim // 2, FP32)
    else:  # cos and sin [S, d/2], for q and for k
        rope = Saved("RoPE cos/sin tables", 2 * s * cfg.head_dim, c)
    attention = [
        Saved("q, k after RoPE", 2 * s * b * h // t, c),
        Saved("attention output", s * b * h // t, c),
        Saved("attention log-sum-exp", b * (cfg.heads // t) * s, FP32),
    ]
    if cfg.value_residual and layer > 0:
        attention.append(Saved("v mixed with v_first", s * b * h // t, c))
    # The reference keeps silu(g) for the product's backward; the fused kernel recomputes it from g.
    activation = [] if fused else [Saved("silu(g)", s * b * m // t, c)]
    if cfg.block == "parallel":
        saved += [
            Saved("W_in input", rows * b * h, _matmul_input(precision, modulated)),
            Saved("W_in output [q k v g u]", s * b * (3 * h + 2 * m) // t, c),
            rope, *attention, *activation,
            Saved("W_out input [attention, silu(g) u]", s * b * (h + m) // t, _matmul_input(precision, c)),
            Saved("W_out output", rows * b * h, c),
        ]
    else:
        saved += [
            Saved("qkv input", rows * b * h, _matmul_input(precision, modulated)),
            Saved("qkv output", 3 * s * b * h // t, c),
            rope, *attention,
            Saved("attn_out input", s * b * h // t, _matmul_input(precision, c)),
            Saved("attn_out output", rows * b * h, c),
            *_norm("second norm", rows, b, h, precision, fused),
            Saved("fc1 input", rows * b * h, _matmul_input(precision, modulated)),
            Saved("fc1 output [g u]", 2 * s * b * m // t, c),
            *activation,
            Saved("fc2 input", s * b * m // t, _matmul_input(precision, c)),
            Saved("fc2 output", rows * b * h, c),
        ]
    return saved


SELECTIVELY_RECOMPUTED = ("norm input", "norm statistics", "norm output", "W_in input", "qkv input",
                          "q, k after RoPE", "silu(g)", "RoPE cos/sin tables", "second norm input",
                          "second norm statistics", "second norm output", "fc1 input")


def block_input(cfg: VideoDiTConfig, shape: Shape, precision: Precision) -> Saved:
    return Saved("block input (checkpoint)", shape.stream_sequence * shape.batch * cfg.hidden, precision.compute)


def block_bytes(cfg: VideoDiTConfig, shape: Shape, precision: Precision, layer: int, recompute: str,
                fused: bool = False) -> int:
    """Bytes one block keeps between its forward and its backward under `recompute`."""
    saved = block_saved(cfg, shape, precision, layer, fused)
    if recompute == "none":
        return sum(x.bytes for x in saved)
    kept = block_input(cfg, shape, precision).bytes
    if recompute == "selective":
        kept += sum(x.bytes for x in saved if x.name not in SELECTIVELY_RECOMPUTED)
    return kept


def first_layer_values(cfg: VideoDiTConfig, shape: Shape, precision: Precision) -> int:
    """v_first is a view of layer 0's projection output: under full recompute it alone keeps it."""
    if not cfg.value_residual:
        return 0
    width = 3 * cfg.hidden + 2 * cfg.mlp_hidden if cfg.block == "parallel" else 3 * cfg.hidden
    return shape.local_sequence * shape.batch * width // shape.tensor * precision.compute


def embedding_saved(cfg: VideoDiTConfig, shape: Shape, precision: Precision, fused: bool = False) -> list[Saved]:
    """Patch embedding, text projection and timestep MLP (the first pipeline stage)."""
    b, c, h = shape.batch, precision.compute, cfg.hidden
    video, text = math.ceil(shape.video_tokens / shape.context), math.ceil(shape.text_tokens / shape.context)
    saved = [
        Saved("patch embedding input", b * video * cfg.patch_dim, c),
        Saved("text projection (input, GELU in and out)", b * text * (cfg.text_dim + 2 * h), c),
        Saved("timestep MLP and conditioning", b * (cfg.timestep_dim + 3 * h), c),
    ]
    if cfg.pooled_text_conditioning:
        saved.append(Saved("pooled text MLP", b * (cfg.text_dim + 2 * h), c))
    if shape.sequence_parallel and stream_bytes(precision, fused) == precision.compute:
        # Block 0's norm input is this rank's slice of the whole sequence, a view: with no autocast
        # cast in between (fp32, or the fused norm), it keeps the other ranks' rows alive too.
        rows = shape.local_sequence - shape.stream_sequence
        saved.append(Saved("sequence before the sequence-parallel split", rows * b * h, c))
    return saved


def final_saved(cfg: VideoDiTConfig, shape: Shape, precision: Precision) -> list[Saved]:
    """Final norm, modulation and projection and the loss (the last pipeline stage)."""
    b, c, n, h = shape.batch, precision.compute, precision.norm, cfg.hidden
    video = math.ceil(shape.video_tokens / shape.context)
    return [
        # The norm's input is a slice of the gathered sequence: under fp32 it keeps all of it.
        Saved("final norm input", b * shape.local_sequence * h, n),
        Saved("final norm statistics and output", b * video * (h + 2), n),
        Saved("final modulation (per sample)", 3 * b * h, c),
        Saved("final projection input", b * video * h, c),
        Saved("loss (prediction - target, fp32)", b * video * cfg.patch_dim, FP32),
    ]


def backward_working_set(cfg: VideoDiTConfig, shape: Shape, precision: Precision, fused: bool = False) -> int:
    """Gradients alive at once inside one block's backward (projection outputs, inputs, one weight)."""
    h, m, t = cfg.hidden, cfg.mlp_hidden, shape.tensor
    b, s, rows = shape.batch, shape.local_sequence, shape.stream_sequence
    c = precision.compute
    width = 3 * h + 2 * m if cfg.block == "parallel" else 3 * h
    grads = s * b * width // t * c + s * b * (h + m) // t * c + rows * b * h * stream_bytes(precision, fused)
    return grads + h * width // t * FP32  # W_in's fp32 weight gradient before it joins the grad buffer


def modulation_weights(cfg: VideoDiTConfig, layers: int) -> int:
    """Weights of `layers` blocks' plain nn.Linear modulation MLPs: autocast's low-precision copies of
    them are saved for backward (megatron's projections save their fp32 weight instead)."""
    inner = cfg.adaln_lora_rank or cfg.hidden
    return layers * (cfg.hidden * inner + inner * modulations_per_block(cfg) * cfg.hidden)
