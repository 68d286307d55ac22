"""Check a TP x CP x PP x DP layout against the world size and the model before any work starts.

Every impossible or unbuilt combination is refused with a ConfigError naming the key to change, so
a job that cannot run fails in seconds on the login node rather than hangs or, worse, silently
computes something else. The result also resolves `parallel.context_mode=auto` into the concrete
context-parallel attention: Ulysses (all-to-all over heads) needs the CP size to divide the local
heads; when it does not, the largest Ulysses degree the heads allow is combined with a ring over
the rest (USP), and plain ring attention is what remains when no head split is possible.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from megatron_video.config import ConfigError, require
from megatron_video.model.attention import transformer_engine_available
from megatron_video.model.config import VideoDiTConfig
from megatron_video.parallel.state import ParallelConfig


@dataclass(frozen=True)
class Layout:
    """The validated layout of one run: group sizes and the resolved context-parallel attention."""

    tensor: int
    context: int
    pipeline: int
    virtual_pipeline: int  # model chunks per pipeline rank (1 = no interleaving)
    data: int
    context_mode: str  # none | ulysses | ring | usp | te
    ulysses: int  # all-to-all degree inside the CP group; the ring spans context // ulysses

    @property
    def ring(self) -> int:
        return self.context // self.ulysses

    @property
    def hierarchical_context_sizes(self) -> list[int] | None:
        """megatron's hierarchical CP groups [all-to-all, ring] (inner groups are contiguous CP ranks)."""
        return [self.ulysses, self.ring] if self.context_mode == "usp" else None


def resolve_context_mode(parallel: ParallelConfig, model: VideoDiTConfig) -> tuple[str, int]:
    """(mode, Ulysses degree) for the CP size and the heads each tensor-parallel rank holds."""
    cp, mode = parallel.context, parallel.context_mode
    if cp == 1:
        return "none", 1
    local_heads = model.heads // parallel.tensor
    split = math.gcd(cp, local_heads)  # the largest all-to-all degree both CP and the heads allow
    if mode == "auto":
        mode = "ulysses" if split == cp else ("ring" if split == 1 else "usp")
    if mode == "te":
        require(transformer_engine_available(), "parallel.context_mode",
                "te needs Transformer Engine, which is not importable here (it ships in NGC PyTorch "
                "images); use auto, ulysses, ring or usp")
        return "te", 1
    if mode == "ulysses":
        require(split == cp, "parallel.context_mode",
                f"ulysses splits the {local_heads} heads of each tensor-parallel rank over {cp} context "
                f"ranks, which does not divide them; use usp or ring (or auto)")
        return "ulysses", cp
    if mode == "usp":
        require(1 < split < cp, "parallel.context_mode",
                f"usp combines an all-to-all over a common divisor of the local heads ({local_heads}) and "
                f"parallel.context ({cp}) with a ring over the rest; here that is "
                f"{'ulysses alone' if split == cp else 'a ring alone'}: use {'ulysses' if split == cp else 'ring'}")
        return "usp", split
    return "ring", 1


def validate_layout(parallel: ParallelConfig, model: VideoDiTConfig, world_size: int,
                    sequence_tokens: int | None = None) -> Layout:
    """The Layout of `parallel` on `world_size` ranks for `model`, or a ConfigError naming the key.

    `sequence_tokens` (text + video tokens of one sample), when known, is checked against the
    context-parallel split.
    """
    tp, cp, pp = parallel.tensor, parallel.context, parallel.pipeline
    model_parallel = tp * cp * pp
    require(world_size % model_parallel == 0, "parallel",
            f"tensor*context*pipeline = {tp}*{cp}*{pp} = {model_parallel} does not divide the world size "
            f"{world_size}")
    require(model.heads % tp == 0, "parallel.tensor", f"{tp} does not divide model.heads ({model.heads})")
    require(model.mlp_hidden % tp == 0, "parallel.tensor",
            f"{tp} does not divide the MLP width ({model.mlp_hidden} = model.hidden * model.mlp_ratio)")
    mode, ulysses = resolve_context_mode(parallel, model)
    if model.spatio_temporal and mode in ("ring", "usp", "te"):
        raise ConfigError("parallel.context_mode",
                          f"{mode} is not built for the factorised ST-DiT attention (model.spatio_temporal): its "
                          f"frame and time groups need whole sequences, which only ulysses provides; choose "
                          f"parallel.context dividing the local heads ({model.heads // tp}) and ulysses")
    if sequence_tokens is not None:
        require(sequence_tokens >= cp * (tp if parallel.sequence_parallel else 1), "parallel.context",
                f"a sample has {sequence_tokens} tokens, fewer than the {cp} context ranks"
                + (f" x {tp} sequence-parallel ranks" if parallel.sequence_parallel else "") + " sharing it")
    chunks = parallel.virtual_pipeline or 1
    require(parallel.virtual_pipeline != 1, "parallel.virtual_pipeline",
            "is the number of model chunks per pipeline rank: 0 (off) or >= 2")
    require(chunks == 1 or pp > 1, "parallel.virtual_pipeline", "interleaving needs parallel.pipeline > 1")
    require(model.layers % (pp * chunks) == 0, "parallel.pipeline",
            f"model.layers ({model.layers}) must split evenly into pipeline ({pp})"
            + (f" x virtual_pipeline ({chunks})" if chunks > 1 else "") + " stages")
    require(chunks == 1 or parallel.microbatches % pp == 0, "parallel.microbatches",
            f"the interleaved schedule needs a multiple of parallel.pipeline ({pp}), got {parallel.microbatches}")
    return Layout(tensor=tp, context=cp, pipeline=pp, virtual_pipeline=chunks, data=world_size // model_parallel,
                  context_mode=mode, ulysses=ulysses)
