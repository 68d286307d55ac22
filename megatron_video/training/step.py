"""Forward and backward of one optimizer step through megatron-core's schedules, for every layout.

`get_forward_backward_func` picks the schedule from parallel_state: no pipelining (pp = 1), 1F1B,
or interleaved 1F1B (virtual pipeline). Each schedule runs the microbatches through this rank's
model chunks, sends activations between stages, scales each microbatch's loss by CP / microbatches
(megatron's convention: DDP then averages gradients over the data x context ranks), and, after the
last backward, calls the config's `finalize_model_grads` (DDP gradient reduction, conditioning
gradients summed over pipeline stages). Validation runs the same path with forward_only.
"""
from __future__ import annotations

import contextlib
from functools import partial

import torch
import torch.distributed as dist
from megatron.core import parallel_state
from megatron.core.distributed import finalize_model_grads
from megatron.core.pipeline_parallel import get_forward_backward_func
from megatron.core.utils import get_attr_wrapped_model, get_model_config

from megatron_video.model.packing import PackLayout, segment_losses
from megatron_video.training.build import Components


def configure_schedules(chunks: list[torch.nn.Module], overlap_grad_reduce: bool = False) -> None:
    """Set what megatron's schedules read from the model config for training these chunks."""
    config = get_model_config(chunks[0])
    config.finalize_model_grads_func = finalize_model_grads
    # gloo's batched P2P silently corrupts the interleaved schedule's exchanges: plain P2P there.
    config.batch_p2p_comm = dist.get_backend() == "nccl"
    no_sync = [chunk.no_sync for chunk in chunks]
    config.no_sync_func = no_sync[0] if len(no_sync) == 1 else no_sync
    if overlap_grad_reduce:
        grad_sync = [chunk.start_grad_sync for chunk in chunks]
        config.grad_sync_func = grad_sync[0] if len(grad_sync) == 1 else grad_sync


def _loss(parts: Components, target: torch.Tensor, pack: PackLayout | None, prediction: torch.Tensor):
    # A packed row: the mean of its samples' own losses (each as if it were alone in a batch).
    if pack is None:
        loss = parts.flow.loss(prediction.float(), target)
    else:
        loss = segment_losses(prediction, target, pack).mean()
    # The schedule scales the loss in place; report the unscaled value.
    return loss, {"loss": loss.detach().clone()}


def run_microbatches(chunks: list[torch.nn.Module], parts: Components, microbatches: list[dict],
                     dtype: torch.dtype, forward_only: bool) -> float:
    """Mean loss of `microbatches` (the same on every rank of a replica); gradients accumulated
    and finalized in the chunks' grad buffers unless forward_only."""
    device_type = microbatches[0]["noised"].device.type

    def forward_step(data_iterator, model):
        batch = next(data_iterator)
        with torch.autocast(device_type, dtype=dtype, enabled=dtype != torch.float32):
            prediction = model(batch["noised"], batch["timesteps"], batch["text"], batch["mask"],
                               **({"pack": batch["pack"]} if "pack" in batch else {}))
        return prediction, partial(_loss, parts, batch["target"], batch.get("pack"))

    first = microbatches[0]
    config = get_model_config(chunks[0])
    tp = parallel_state.get_tensor_model_parallel_world_size() if config.sequence_parallel else 1
    # The schedules size their receive buffers as [seq_length / CP (/ TP under SP), micro batch, hidden].
    # Packed rows (one per microbatch) all have the token budget's length.
    rows = get_attr_wrapped_model(chunks[0], "stage_rows")(first["noised"].shape, first["text"].shape[1],
                                                           first.get("pack"))
    context = contextlib.nullcontext() if not forward_only else torch.no_grad()
    with context:
        outputs = get_forward_backward_func()(
            forward_step_func=forward_step, data_iterator=[iter(microbatches) for _ in chunks], model=chunks,
            num_microbatches=len(microbatches), micro_batch_size=first["noised"].shape[0],
            seq_length=rows * parallel_state.get_context_parallel_world_size() * tp, forward_only=forward_only)
    total = torch.zeros((), dtype=torch.float64, device=first["noised"].device)
    if parallel_state.is_pipeline_last_stage(ignore_virtual=True):
        total += sum(float(out["loss"]) for out in outputs) / len(microbatches)
    dist.all_reduce(total, group=parallel_state.get_pipeline_model_parallel_group())
    dist.all_reduce(total, group=parallel_state.get_data_parallel_group())
    return float(total) / parallel_state.get_data_parallel_world_size()

