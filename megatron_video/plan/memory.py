"""Per-GPU training memory of one layout: parameters, gradients, optimizer state, activations.

What the trainer holds today (megatron_video/training/trainer.py): fp32 master parameters (the model
is built in fp32 and run under autocast), megatron DDP's fp32 gradient buffer, SphereAdamW's two
fp32 moments per parameter (sharded over the data-parallel group by the distributed optimizer;
parameters and the gradient buffer are not), and the frozen encoders on every GPU. The peak is the
static part plus the largest of three moments of a step: the end of the forward (all activations
and autocast's weight copies), the start of the backward (activations and one block's gradients)
and the optimizer step (SphereAdamW's per-row products over every constrained matrix at once).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from megatron_video.model.config import VideoDiTConfig
from megatron_video.plan import activations as act
from megatron_video.plan.parameters import StageParameters, stage_layers, stage_parameters

FP32 = 4
ADAM_STATE_BYTES = 2 * FP32  # exp_avg and exp_avg_sq, fp32 whatever the parameter dtype
GIB = 2**30


@dataclass(frozen=True)
class Layout:
    """One way to run a step: the parallel sizes, what is sharded, kept and recomputed."""

    tensor: int = 1
    pipeline: int = 1
    context: int = 1
    data: int = 1
    sequence_parallel: bool = False
    distributed_optimizer: bool = False
    virtual_pipeline: int = 0
    micro_batch: int = 1
    micro_batches: int = 1  # per step and pipeline: how many can be in flight under 1F1B
    recompute: str = "none"
    precision: str = "bf16"

    def __post_init__(self) -> None:
        if self.recompute not in act.RECOMPUTE:
            raise ValueError(f"recompute must be one of {act.RECOMPUTE}, not {self.recompute!r}")
        if self.precision not in act.PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(act.PRECISIONS)}, not {self.precision!r}")

    @property
    def gpus(self) -> int:
        return self.tensor * self.pipeline * self.context * self.data

    def describe(self) -> str:
        parts = [f"tp{self.tensor}" + ("+sp" if self.sequence_parallel else ""), f"pp{self.pipeline}",
                 f"cp{self.context}", f"dp{self.data}"]
        if self.distributed_optimizer:
            parts.append("dist-opt")
        parts.append(f"mb{self.micro_batch}")
        if self.recompute != "none":
            parts.append(f"recompute={self.recompute}")
        if self.precision != "bf16":
            parts.append(self.precision)
        return " ".join(parts)


@dataclass(frozen=True)
class Workload:
    """The sample shape one step trains on: tokens of one clip (text + video) and the frozen encoders."""

    video_tokens: int
    text_tokens: int
    encoder_parameters: int = 0
    encoder_bytes_per_parameter: int = FP32

    @property
    def sequence(self) -> int:
        return self.video_tokens + self.text_tokens


@dataclass
class MemoryPlan:
    """Bytes per GPU on the fullest pipeline stage, and how they add up."""

    layout: Layout
    stage: int
    parameters_count: int
    parameters: int
    gradients: int
    optimizer: int
    encoders: int
    activations: int
    weight_copies: int
    backward_working_set: int
    optimizer_step: int
    buffers: int
    inputs: int
    layer_activations: int  # one block, one micro batch
    pending: list[str] = field(default_factory=list)

    @property
    def static(self) -> int:
        return self.parameters + self.gradients + self.optimizer + self.encoders + self.buffers + self.inputs

    @property
    def transient(self) -> int:
        return max(self.weight_copies, self.backward_working_set, self.optimizer_step - self.activations)

    @property
    def peak(self) -> int:
        return self.static + self.activations + self.transient

    def fits(self, capacity: int) -> bool:
        return self.peak <= capacity

    def rows(self) -> list[tuple[str, int]]:
        """(what, bytes) in the order the table shows them."""
        return [("parameters (fp32)", self.parameters), ("gradients (fp32 buffer)", self.gradients),
                ("optimizer state (fp32 moments)", self.optimizer), ("frozen encoders", self.encoders),
                ("buffers (sequence-parallel gather)", self.buffers),
                ("step inputs (latents, noise, noisy latents, target, text)", self.inputs),
                ("activations", self.activations),
                ("transient (largest of weight copies, backward, optimizer step)", self.transient),
                ("peak", self.peak)]


def pending_features(layout: Layout, built: set[str]) -> list[str]:
    """Features this layout needs that the project does not run yet (their numbers are estimates)."""
    wanted = {"context": layout.context > 1, "pipeline": layout.pipeline > 1,
              "recompute": layout.recompute != "none", "fp8": layout.precision == "fp8"}
    return [name for name, needed in wanted.items() if needed and name not in built]


def in_flight(layout: Layout, stage: int) -> float:
    """Micro batches whose activations a stage holds at once: pp - stage under 1F1B (megatron's
    interleaved schedule keeps (1 + (pp - 1) / (pp * v)) times more on the first stage)."""
    if layout.pipeline == 1:
        return 1.0
    count = min(layout.pipeline - stage, layout.micro_batches)
    if layout.virtual_pipeline > 1:
        count *= 1 + (layout.pipeline - 1) / (layout.pipeline * layout.virtual_pipeline)
    return count


def _stage_plan(cfg: VideoDiTConfig, work: Workload, layout: Layout, stage: int,
                built: set[str]) -> MemoryPlan:
    params: StageParameters = stage_parameters(cfg, layout.tensor, layout.pipeline, stage)
    precision = act.PRECISIONS[layout.precision]
    shape = act.Shape(batch=layout.micro_batch, sequence=work.sequence, video_tokens=work.video_tokens,
                      text_tokens=work.text_tokens, tensor=layout.tensor, context=layout.context,
                      sequence_parallel=layout.sequence_parallel)
    layers = stage_layers(cfg, layout.pipeline, stage)
    # The plan is of GPUs, where model.fused_kernels runs the block ops as kernels/' Functions.
    fused = cfg.fused_kernels
    per_micro_batch = sum(act.block_bytes(cfg, shape, precision, i, layout.recompute, fused) for i in layers)
    if layout.recompute == "full" and stage == 0:
        per_micro_batch += act.first_layer_values(cfg, shape, precision)
    if stage > 0 and cfg.value_residual:  # v_first arrives with the hidden state and is kept
        per_micro_batch += shape.local_sequence * shape.batch * cfg.hidden // shape.tensor * precision.compute
    if stage == 0:
        per_micro_batch += sum(x.bytes for x in act.embedding_saved(cfg, shape, precision, fused))
    if stage == layout.pipeline - 1:
        per_micro_batch += sum(x.bytes for x in act.final_saved(cfg, shape, precision))
    modulation_copies = precision.weight_copy * act.modulation_weights(cfg, len(layers))
    flight = in_flight(layout, stage)
    activations = math.ceil(flight * (per_micro_batch + modulation_copies))
    one_layer = act.block_bytes(cfg, shape, precision, max(layers.start, 1), "none", fused)
    backward = act.backward_working_set(cfg, shape, precision, fused)
    if layout.recompute != "none":  # the block being recomputed holds its activations again
        backward += one_layer
    sharded = layout.data if layout.distributed_optimizer else 1
    # SphereAdamW forms w * g (then w * w) for every constrained row at once: ~4 bytes per parameter
    # of this rank's shard, on top of the activations' memory, which is free by then.
    optimizer_step = FP32 * math.ceil(params.count / sharded)
    buffers = 0
    if layout.sequence_parallel:  # megatron's global buffer for the all-gathered W_in input
        buffers = shape.local_sequence * shape.batch * cfg.hidden * act.stream_bytes(precision, fused)
    video = math.ceil(work.video_tokens / layout.context)
    inputs = FP32 * layout.micro_batch * (4 * video * cfg.patch_dim + work.text_tokens * cfg.text_dim)
    return MemoryPlan(
        layout=layout, stage=stage, parameters_count=params.count,
        parameters=FP32 * params.count, gradients=FP32 * params.count,
        optimizer=ADAM_STATE_BYTES * math.ceil(params.count / sharded),
        encoders=work.encoder_parameters * work.encoder_bytes_per_parameter,
        activations=activations,
        weight_copies=precision.weight_copy * params.tensor_parallel,  # autocast's cache, forward only
        backward_working_set=backward, optimizer_step=optimizer_step, buffers=buffers, inputs=inputs,
        layer_activations=one_layer, pending=pending_features(layout, built))


def plan_memory(cfg: VideoDiTConfig, work: Workload, layout: Layout, built: set[str]) -> MemoryPlan:
    """The plan of the pipeline stage with the highest peak (the one that decides whether it fits)."""
    if cfg.heads % layout.tensor or cfg.mlp_hidden % layout.tensor:
        raise ValueError(f"tensor={layout.tensor} does not divide heads ({cfg.heads}) and mlp_hidden "
                         f"({cfg.mlp_hidden})")
    if layout.pipeline > cfg.layers:
        raise ValueError(f"pipeline={layout.pipeline} exceeds the {cfg.layers} layers")
    stages = [_stage_plan(cfg, work, layout, s, built) for s in range(layout.pipeline)]
    return max(stages, key=lambda p: p.peak)
