"""The `plan` section: which GPU to plan for, how many, and how much of it to leave free."""
from __future__ import annotations

from dataclasses import dataclass

from megatron_video.config.errors import require

MIB = 2**20
# Memory as torch.cuda.get_device_properties(...).total_memory reports it (MiB).
GPUS = {
    "h100-80gb": 81_559,
    "h100-94gb": 95_830,
    "h200": 143_771,
    "a100-80gb": 81_251,
    "a100-40gb": 40_536,
    "l40s": 46_068,
    "b200": 183_359,
}


@dataclass
class PlanConfig:
    gpu: str = "h100-80gb"
    gpus: int = 0  # GPUs of the job; 0 = tensor * pipeline * context (one data-parallel replica)
    micro_batch: int = 0  # samples per GPU per micro batch; 0 = data.batch_size
    micro_batches: int = 0  # micro batches per step under pipeline parallelism; 0 = pipeline size
    # Left free for the CUDA context, NCCL's buffers and the caching allocator's fragmentation.
    headroom_gib: float = 4.0
    suggestions: int = 5
    output: str = ""  # folder for plan.csv and plan.png; empty = <run.output_dir>/plan

    def __post_init__(self) -> None:
        require(self.gpu in GPUS, "gpu", f"must be one of {', '.join(GPUS)}")
        for key in ("gpus", "micro_batch", "micro_batches", "suggestions"):
            require(getattr(self, key) >= 0, key, "must be >= 0")
        require(self.headroom_gib >= 0, "headroom_gib", "must be >= 0")

    @property
    def capacity(self) -> int:
        """Bytes a training process may use on one GPU."""
        return int(GPUS[self.gpu] * MIB - self.headroom_gib * 2**30)
