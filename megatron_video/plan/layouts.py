"""The layout and workload a configuration asks for, and the layouts that would fit instead."""
from __future__ import annotations

import dataclasses
import itertools

from megatron_video.config.errors import ConfigError
from megatron_video.config.run import TrainConfig
from megatron_video.config.schema import RootConfig
from megatron_video.model.patchify import patch_grid
from megatron_video.parallel.state import ParallelConfig
from megatron_video.plan.activations import RECOMPUTE
from megatron_video.plan.memory import Layout, MemoryPlan, Workload, plan_memory
from megatron_video.plan.parameters import tensor_parallel_ok

# Frozen encoders the trainer keeps on every GPU, as it loads them (fp32): all-MiniLM-L6-v2, and the
# UMT5-XXL encoder Wan uses for `encoders.text=t5` (another T5 at text_path has another size).
TEXT_ENCODER_PARAMETERS = {"minilm": 22_713_216, "t5": 5_680_910_336}
# The Wan2.2 VAE compresses 4x in time (1 + (T - 1) / 4 latent frames) and 16x in space.
WAN_TEMPORAL, WAN_SPATIAL = 4, 16
GPUS_PER_NODE = 8  # tensor and context parallelism stay inside a node (NVLink)


def built_features() -> set[str]:
    """Planned features the code base runs today, read from the configuration schema: context and
    pipeline parallelism arrive with `parallel.context_mode`, recompute with `train.recompute`,
    FP8 with `train.fp8`; until then the planner's numbers for them are estimates."""
    parallel = {f.name for f in dataclasses.fields(ParallelConfig)}
    train = {f.name for f in dataclasses.fields(TrainConfig)}
    built = set()
    if "context_mode" in parallel:
        built |= {"context", "pipeline"}
    built |= {name for name in ("recompute", "fp8") if name in train}
    return built


def workload_from_config(cfg: RootConfig) -> Workload:
    """Tokens of one training sample, from the clip size (data.*) through the codec and patch."""
    data, enc = cfg.data, cfg.encoders
    if enc.codec == "wan":
        latent = (1 + (data.frames - 1) // WAN_TEMPORAL, data.height // WAN_SPATIAL, data.width // WAN_SPATIAL)
    else:
        latent = (data.frames, data.height // enc.pixel_factor, data.width // enc.pixel_factor)
    gt, gh, gw = patch_grid(latent, cfg.model.patch)
    return Workload(video_tokens=gt * gh * gw, text_tokens=enc.max_text_len,
                    encoder_parameters=TEXT_ENCODER_PARAMETERS[enc.text])


def precision_of(cfg: RootConfig) -> str:
    """bf16 unless the run asks for fp32 (the CPU default) or for FP8 (`train.fp8` other than off)."""
    if cfg.train.fp8 != "off":
        return "fp8"
    return "fp32" if cfg.train.precision == "fp32" else "bf16"


def layout_from_config(cfg: RootConfig) -> Layout:
    p = cfg.parallel
    model_parallel = p.tensor * p.pipeline * p.context
    gpus = cfg.plan.gpus or model_parallel
    if gpus % model_parallel:
        raise ConfigError("plan.gpus", f"{gpus} is not a multiple of tensor*pipeline*context = {model_parallel}")
    return Layout(tensor=p.tensor, pipeline=p.pipeline, context=p.context, data=gpus // model_parallel,
                  sequence_parallel=p.sequence_parallel, distributed_optimizer=p.distributed_optimizer,
                  virtual_pipeline=p.virtual_pipeline, micro_batch=cfg.plan.micro_batch or cfg.data.batch_size,
                  micro_batches=cfg.plan.micro_batches or p.pipeline,
                  recompute=planned_recompute(cfg.train.recompute), precision=precision_of(cfg))


def planned_recompute(mode: str) -> str:
    """The planner's recompute mode for `train.recompute`: none and block (the planner's "full")
    are modelled; the trainer's attention and mlp parts are not yet, so they are refused by name."""
    if mode in ("none", "block"):
        return {"none": "none", "block": "full"}[mode]
    raise ConfigError("train.recompute", f"mvideo plan models recompute=none|block; '{mode}' is not modelled yet")


def _powers_of_two(limit: int) -> list[int]:
    return [2**i for i in range(limit.bit_length()) if 2**i <= limit]


def candidate_layouts(cfg: RootConfig, base: Layout) -> list[Layout]:
    """Layouts over the same GPUs and micro batch: TP and CP within a node, PP over the rest, each
    with every recompute mode; sequence parallelism with TP, the distributed optimizer with DP."""
    model = cfg.model
    found = []
    for tp, cp in itertools.product(_powers_of_two(GPUS_PER_NODE), repeat=2):
        if tp * cp > GPUS_PER_NODE or base.gpus % (tp * cp) or not tensor_parallel_ok(model, tp):
            continue
        for pp in _powers_of_two(min(base.gpus // (tp * cp), model.layers)):
            dp = base.gpus // (tp * cp * pp)
            for recompute in RECOMPUTE:
                found.append(dataclasses.replace(
                    base, tensor=tp, context=cp, pipeline=pp, data=dp, sequence_parallel=tp > 1,
                    distributed_optimizer=dp > 1, virtual_pipeline=0,
                    micro_batches=max(base.micro_batches, pp) if pp > 1 else 1, recompute=recompute))
    return found


def step_cost(layout: Layout) -> float:
    """A rough relative step time, only to order suggestions: full recompute re-runs the forward
    (+1/3), selective its elementwise parts; TP and CP pay communication per doubling; PP pays the
    1F1B bubble (pp - 1) / micro batches."""
    cost = {"none": 1.0, "selective": 1.05, "full": 1.33}[layout.recompute]
    cost *= 1 + 0.06 * (layout.tensor.bit_length() - 1) + 0.06 * (layout.context.bit_length() - 1)
    return cost * (1 + (layout.pipeline - 1) / max(layout.micro_batches, 1))


def suggest(cfg: RootConfig, work: Workload, base: Layout, capacity: int, built: set[str],
            count: int) -> list[MemoryPlan]:
    """Up to `count` other layouts that fit `capacity`, cheapest first (built features before pending)."""
    plans = [plan_memory(cfg.model, work, layout, built) for layout in candidate_layouts(cfg, base)
             if layout != base]
    fitting = [p for p in plans if p.fits(capacity)]
    fitting.sort(key=lambda p: (bool(p.pending), step_cost(p.layout), p.peak))
    return fitting[:count]
