"""Start torch.distributed and megatron-core's parallel_state from one ParallelConfig.

Works the same under torchrun/srun (env:// rendezvous, NCCL on GPUs) and in a plain single
process (the CPU demo), where a one-rank gloo group is created so megatron's parallel layers, which
always ask parallel_state for their group, run unchanged.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist

from megatron_video.config import ConfigError, require

CONTEXT_MODES = ("auto", "ulysses", "ring", "usp", "te")


@dataclass
class ParallelConfig:
    """Sizes of each parallel dimension; data parallel is what remains of the world size."""

    tensor: int = 1
    pipeline: int = 1
    context: int = 1
    # How attention spans the context-parallel ranks: auto | ulysses (all-to-all over heads) |
    # ring (P2P with an online-softmax merge) | usp (both) | te (Transformer Engine's CP attention).
    context_mode: str = "auto"
    sequence_parallel: bool = False
    virtual_pipeline: int = 0  # model chunks per pipeline rank (interleaved schedule); 0 = off
    microbatches: int = 1  # per optimizer step; global batch = data.batch_size * microbatches * DP
    distributed_optimizer: bool = False
    overlap_grad_reduce: bool = False  # start DP gradient reduction during backward (bucket by bucket)
    backend: str = "auto"  # auto | nccl | gloo

    def __post_init__(self) -> None:
        for key in ("tensor", "pipeline", "context"):
            require(getattr(self, key) >= 1, key, "must be >= 1")
        require(self.virtual_pipeline >= 0, "virtual_pipeline", "must be >= 0")
        require(self.microbatches >= 1, "microbatches", "must be >= 1")
        require(self.context_mode in CONTEXT_MODES, "context_mode", f"must be one of {CONTEXT_MODES}")
        require(self.backend in ("auto", "nccl", "gloo"), "backend", "must be auto, nccl or gloo")
        require(not self.sequence_parallel or self.tensor > 1, "sequence_parallel",
                "needs tensor > 1 (sequence parallelism splits along the tensor-parallel group)")

    def model_parallel_size(self) -> int:
        return self.tensor * self.pipeline * self.context


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed(cfg: ParallelConfig, device: torch.device, seed: int = 0,
                     hierarchical_context_sizes: list[int] | None = None) -> None:
    """Create the default process group (if needed) and megatron's model-parallel groups.

    `hierarchical_context_sizes` ([all-to-all, ring], from Layout) makes megatron build the
    sub-groups of the CP group that USP attention runs over.
    """
    from megatron.core import parallel_state, tensor_parallel

    if device.type == "cpu":
        from megatron_video.parallel.cpu_compat import enable_cpu_compat

        enable_cpu_compat()
    if not dist.is_initialized():
        backend = cfg.backend if cfg.backend != "auto" else ("nccl" if device.type == "cuda" else "gloo")
        if "RANK" not in os.environ:  # a plain `python`/`mvideo` run: a one-rank group
            # The store binds a port the OS picks (0) and keeps it: no port is chosen first and bound
            # later, and a MASTER_PORT inherited from a parent's own one-rank group (a test process, a
            # notebook), which that parent's store still holds, is never reused.
            store = dist.TCPStore("127.0.0.1", 0, world_size=1, is_master=True)
            os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(store.port)
            dist.init_process_group(backend, store=store, rank=0, world_size=1)
        else:
            if device.type == "cuda":
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            dist.init_process_group(backend)
    world = dist.get_world_size()
    if world % cfg.model_parallel_size():
        raise ConfigError("parallel", f"tensor*pipeline*context = {cfg.model_parallel_size()} "
                                      f"does not divide the world size {world}")
    if not parallel_state.model_parallel_is_initialized():
        parallel_state.initialize_model_parallel(
            tensor_model_parallel_size=cfg.tensor,
            pipeline_model_parallel_size=cfg.pipeline,
            virtual_pipeline_model_parallel_size=cfg.virtual_pipeline or None,
            context_parallel_size=cfg.context,
            hierarchical_context_parallel_sizes=hierarchical_context_sizes,
        )
    tensor_parallel.model_parallel_cuda_manual_seed(seed)


def destroy_distributed() -> None:
    from megatron.core import parallel_state

    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()
