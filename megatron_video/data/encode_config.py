"""`encode.*`: where `mvideo encode` writes latent shards and how it runs (docs/latents.md)."""
from __future__ import annotations

from dataclasses import dataclass

from megatron_video.config.errors import require

STORAGE_DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class EncodeConfig:
    output: str = ""  # empty: <run.output_dir>/latents
    batch_size: int = 4  # clips through the VAE and the text encoder at once
    dtype: str = "float32"  # how latents and text states are stored: float32 | bfloat16 | float16

    def __post_init__(self) -> None:
        require(self.batch_size >= 1, "batch_size", "must be >= 1")
        require(self.dtype in STORAGE_DTYPES, "dtype", f"must be one of {STORAGE_DTYPES}")
