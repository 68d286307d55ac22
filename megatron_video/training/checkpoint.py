"""Distributed checkpoints on megatron-core `dist_checkpointing` (torch_dist format).

A checkpoint is a directory `ckpt_<step>` holding every rank's shards of the model (layout-free
keys: model/sharded_state.py), the optimizer's moments in model space (so the checkpoint reshards
across TP x PP x DP), the scheduler, step, data position, fault counters and each rank's RNG
states. It is written as `ckpt_<step>.partial` and renamed only after every rank has finished
writing (the rename is atomic), so a run killed mid-save leaves an invisible partial directory and
the previous checkpoint is the latest. With `async_save` the shards are staged in host memory and
written by a background process while training goes on; the trainer polls the queue each step
and the rename happens at the first step boundary after every rank's writer is done.

Retention keeps the newest `keep_last` checkpoints plus every one whose step is a multiple of
`keep_every` (the series `mvideo ema` averages, and evaluation's).
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import pathlib
import re
import shutil
from multiprocessing.managers import SyncManager
from typing import Any

import torch
import torch.distributed as dist
from megatron.core import dist_checkpointing, parallel_state
from megatron.core.dist_checkpointing.mapping import ShardedObject
from megatron.core.dist_checkpointing.strategies import filesystem_async
from megatron.core.dist_checkpointing.strategies.fully_parallel import FullyParallelSaveStrategyWrapper
from megatron.core.dist_checkpointing.strategies.torch import TorchDistSaveShardedStrategy, get_async_strategy
from megatron.core.tensor_parallel import get_cuda_rng_tracker

from megatron_video.config import ConfigError
from megatron_video.lifetime import exit_with

log = logging.getLogger(__name__)

_COMPLETE = re.compile(r"^ckpt_(\d{7})$")
PARTIAL = ".partial"
EXPORT_WEIGHTS = "model.safetensors"  # `mvideo export`'s weights, beside its config.json


def checkpoint_name(step: int) -> str:
    return f"ckpt_{step:07d}"


def is_checkpoint(path: pathlib.Path) -> bool:
    """A complete dist checkpoint: a published `ckpt_<step>` directory with its metadata."""
    return bool(_COMPLETE.match(path.name)) and (path / "metadata.json").is_file()


def complete_checkpoints(ckpt_dir: pathlib.Path) -> list[pathlib.Path]:
    """The complete checkpoints in `ckpt_dir`, oldest first (partial ones are never listed)."""
    found = [p for p in ckpt_dir.iterdir() if is_checkpoint(p)] if ckpt_dir.is_dir() else []
    return sorted(found, key=lambda p: int(_COMPLETE.match(p.name).group(1)))


def latest_checkpoint(ckpt_dir: pathlib.Path) -> pathlib.Path | None:
    found = complete_checkpoints(ckpt_dir)
    return found[-1] if found else None


def checkpoint_step(path: pathlib.Path) -> int:
    return int(_COMPLETE.match(path.name).group(1))


def to_remove(steps: list[int], keep_last: int, keep_every: int) -> list[int]:
    """The steps retention drops: all but the newest `keep_last` and multiples of `keep_every`."""
    newest = set(sorted(steps)[-keep_last:]) if keep_last else set(steps)
    return [s for s in steps if s not in newest and not (keep_every and s % keep_every == 0)]


def rng_state(device: torch.device) -> dict[str, Any]:
    """This rank's generators: CPU, the device's, and megatron's tensor-parallel tracker."""
    states = {"cpu": torch.get_rng_state(), "tracker": get_cuda_rng_tracker().get_states()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def restore_rng_state(states: dict[str, Any], device: torch.device) -> None:
    # Generator states must be CPU byte tensors, whatever map_location the checkpoint was read with.
    torch.set_rng_state(states["cpu"].cpu())
    if "cuda" in states and device.type == "cuda":
        torch.cuda.set_rng_state(states["cuda"].cpu(), device)
    get_cuda_rng_tracker().set_states({name: state.cpu() for name, state in states["tracker"].items()})


def per_rank_object(key: str, value: Any) -> ShardedObject:
    """One object per rank (its own generators, its loader's position), keyed by the global rank:
    it loads back only at the world size that saved it."""
    return ShardedObject(key, value, (dist.get_world_size(),), (dist.get_rank(),), replica_id=0)


def sharded_rng_state(device: torch.device) -> ShardedObject:
    return per_rank_object("rng_state", rng_state(device))


class Checkpointer:
    """Saves (synchronously or in the background), publishes, prunes and loads dist checkpoints."""

    def __init__(self, ckpt_dir: pathlib.Path, keep_last: int = 2, keep_every: int = 0, async_save: bool = False):
        self.ckpt_dir, self.keep_last, self.keep_every = ckpt_dir, keep_last, keep_every
        self.async_strategy = _async_strategy() if async_save else None
        _results_queue_ending_with_this_process()  # synchronous saves write through megatron's queue too
        self.queue = (get_async_strategy(self.async_strategy)[1]["AsyncCallsQueue"]()
                      if self.async_strategy else None)

    def _strategy(self) -> TorchDistSaveShardedStrategy | FullyParallelSaveStrategyWrapper:
        strategy = TorchDistSaveShardedStrategy("torch_dist", 1)
        dp_group = parallel_state.get_data_parallel_group(with_context_parallel=True)
        if dist.get_world_size(dp_group) == 1:
            return strategy
        # Replicated tensors are written once, the writing spread over the data-parallel ranks.
        return FullyParallelSaveStrategyWrapper(strategy, dp_group)

    def save(self, step: int, sharded_state_dict: dict) -> pathlib.Path:
        """Start saving; returns the directory the checkpoint will have once published."""
        self.wait()  # one save in flight at a time
        final = self.ckpt_dir / checkpoint_name(step)
        partial = final.with_name(final.name + PARTIAL)
        if dist.get_rank() == 0:
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
        dist.barrier()
        request = dist_checkpointing.save(sharded_state_dict, str(partial), self._strategy(),
                                          async_sharded_save=self.queue is not None,
                                          async_strategy=self.async_strategy or "mcore")
        if self.queue is None:
            self._publish(partial, final)
        else:
            request.add_finalize_fn(lambda: self._publish(partial, final))
            self.schedule(request, step)
        return final

    def schedule(self, request, step: int) -> None:
        """Hand the background write of `step`'s checkpoint to the async queue."""
        self.queue.schedule_async_request(request)

    def _publish(self, partial: pathlib.Path, final: pathlib.Path) -> None:
        """Every rank has written its shards: make the checkpoint visible, then prune."""
        if dist.get_rank() == 0:
            if final.exists():  # a run resumed from an older checkpoint reached this step again
                shutil.rmtree(final)
            os.replace(partial, final)
            steps = [checkpoint_step(p) for p in complete_checkpoints(self.ckpt_dir)]
            for step in to_remove(steps, self.keep_last, self.keep_every):
                shutil.rmtree(self.ckpt_dir / checkpoint_name(step), ignore_errors=True)
            log.info("checkpoint %s complete", final)
        dist.barrier()

    def poll(self) -> None:
        """Publish a background save if every rank has finished it (a collective: call on all ranks)."""
        if self.queue is not None:
            self.queue.maybe_finalize_async_calls(blocking=False)

    def wait(self) -> None:
        if self.queue is not None:
            self.queue.maybe_finalize_async_calls(blocking=True)

    def close(self) -> None:
        self.wait()
        if self.queue is not None:
            self.queue.close()


def _results_queue_ending_with_this_process() -> None:
    """megatron-core's checkpoint writers, synchronous and background, report through a queue served
    by a Manager process that it spawns on first use and never ties to the trainer: a trainer killed
    mid-run (OOM, node failure, the tests' SIGKILL) left that server running forever. This hands
    megatron a queue whose server ends with this process (megatron_video/lifetime.py), once per
    process, before megatron would make its own."""
    if filesystem_async._results_queue is not None:
        return
    manager = SyncManager(ctx=multiprocessing.get_context("spawn"))
    manager.start(initializer=exit_with, initargs=(os.getpid(),))
    filesystem_async._results_queue = manager.Queue()  # the proxy keeps its manager alive


def _async_strategy() -> str:
    """NVIDIA Resiliency Extension's async writer where installed, megatron-core's own otherwise."""
    try:
        import nvidia_resiliency_ext  # noqa: F401
    except ImportError:
        return "mcore"
    return "nvrx"


def model_sharded_state(chunks: list[torch.nn.Module]) -> dict:
    """The model part of a checkpoint: `model`, or `model0`, `model1`, ... for several chunks."""
    if len(chunks) == 1:
        return {"model": chunks[0].sharded_state_dict()}
    return {f"model{i}": chunk.sharded_state_dict() for i, chunk in enumerate(chunks)}


def load_model_state(chunks: list[torch.nn.Module], state: dict) -> None:
    for index, chunk in enumerate(chunks):
        chunk.load_state_dict(state["model" if len(chunks) == 1 else f"model{index}"])


def load_model_weights(chunks: list[torch.nn.Module], path: pathlib.Path) -> None:
    """Only the model's weights from the dist checkpoint at `path`, at this process's layout."""
    load_model_state(chunks, load_checkpoint(path, model_sharded_state(chunks)))


def load_checkpoint(path: pathlib.Path, sharded_state_dict: dict) -> dict:
    """Load `sharded_state_dict`'s entries from the checkpoint at `path` (any saving layout)."""
    if not is_checkpoint(path):
        raise ConfigError("train.resume", f"'{path}' is not a complete dist checkpoint")
    return dist_checkpointing.load(sharded_state_dict, str(path))


def resolve_checkpoint(path: str) -> pathlib.Path:
    """What `path` names: a weights file (post-hoc EMA's .pt, .safetensors export), an
    export directory (its model.safetensors), a dist checkpoint, or a run directory (its latest)."""
    candidate = pathlib.Path(path)
    if candidate.is_file():
        return candidate
    if (candidate / EXPORT_WEIGHTS).is_file():
        return candidate / EXPORT_WEIGHTS
    if is_checkpoint(candidate):
        return candidate
    for folder in (candidate / "checkpoints", candidate):
        if found := latest_checkpoint(folder):
            return found
    raise ConfigError("sample.checkpoint", f"no complete checkpoint, export or weights file at '{path}'")


def clear_partial(ckpt_dir: pathlib.Path) -> None:
    """Remove what a killed run left half-written (rank 0; before any new save)."""
    for partial in ckpt_dir.glob(f"ckpt_*{PARTIAL}") if ckpt_dir.is_dir() else ():
        log.warning("removing the incomplete checkpoint %s", partial)
        shutil.rmtree(partial, ignore_errors=True)

