"""VideoDiTConfig: every knob of the video diffusion transformer, validated on construction."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from megatron_video.config import ConfigError, require

BLOCKS = ("parallel", "sequential")
PACKED_ATTENTION = ("segments", "flex")
ATTENTION_BACKENDS = ("auto", "math", "efficient", "flash", "cudnn", "te", "fa4")


@dataclass
class VideoDiTConfig:
    """Shape and variant switches of VideoDiT (Summer-22B section 4; NeMo VFM variants as flags).

    Plain field types only, so a recipe YAML maps onto it one key per field.
    """

    in_channels: int = 48
    patch: list = field(default_factory=lambda: [1, 2, 2])  # (t, h, w)
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0  # gated MLP width = mlp_ratio * hidden
    text_dim: int = 384
    max_text_len: int = 32
    block: str = "parallel"
    residual_offset: float | None = None  # c in x + (gate + c) y; None means 1 / layers
    value_residual: bool = True
    rope_w_min: float = 1.0  # radians per unit of normalised position (longest axis = 1)
    rope_w_max: float = 100.0
    rope_zero_fraction: float = 0.1  # share of bands left unrotated (partial RoPE)
    rope_seed: int = 0  # layer i uses rope_seed + i for its band axes
    # Fixed sin/cos features of each video token's normalised (t, h, w) position added to its patch
    # embedding (DiT, Latte), at RoPE's frequencies. RoPE alone only tells a token where the others
    # are relative to it; a small model trained briefly cannot place content in the frame from that
    # (benchmarks/notes.md, "demo fidelity: absolute positions"). No parameters, so checkpoints load
    # either way; off by default so models trained without it keep their outputs.
    absolute_positions: bool = False
    attention_backend: str = "auto"
    adaln_lora_rank: int = 0  # 0 = full-rank per-block modulation
    spatio_temporal: bool = False  # ST-DiT: even blocks attend within frames, odd ones along time
    timestep_dim: int = 256  # width of the sinusoidal timestep features
    # The masked mean of the text states, through an MLP, added to the timestep embedding that drives
    # AdaLN (SD3/Flux); off by default so checkpoints and exports of models built without it still load.
    pooled_text_conditioning: bool = False
    fused_kernels: bool = True  # Triton kernels for the block's norm/RoPE/gating ops on CUDA (kernels/)
    packed_attention: str = "segments"  # packed rows (data.packing): segments | flex (packed_attention.py)

    def __post_init__(self) -> None:
        require(self.in_channels >= 1, "in_channels", "must be >= 1")
        require(isinstance(self.patch, (list, tuple)) and len(self.patch) == 3
                and all(int(p) >= 1 for p in self.patch), "patch", "must be a list of 3 positive ints (t, h, w)")
        self.patch = [int(p) for p in self.patch]
        require(self.hidden >= 1 and self.layers >= 1 and self.heads >= 1, "hidden",
                "hidden, layers and heads must be >= 1")
        require(self.hidden % self.heads == 0, "heads", f"must divide hidden ({self.hidden})")
        require(self.head_dim % 2 == 0, "heads", f"head_dim {self.head_dim} must be even (RoPE rotates pairs)")
        require(self.mlp_ratio > 0 and self.mlp_hidden >= 1, "mlp_ratio", "must be > 0")
        require(self.text_dim >= 1 and self.max_text_len >= 1, "text_dim", "text_dim and max_text_len must be >= 1")
        require(self.block in BLOCKS, "block", f"must be one of {BLOCKS}")
        require(self.residual_offset is None or self.residual_offset >= 0, "residual_offset", "must be >= 0")
        require(0 < self.rope_w_min <= self.rope_w_max, "rope_w_min", "need 0 < rope_w_min <= rope_w_max")
        require(0.0 <= self.rope_zero_fraction < 1.0, "rope_zero_fraction", "must be in [0, 1)")
        require(self.attention_backend in ATTENTION_BACKENDS, "attention_backend",
                f"must be one of {ATTENTION_BACKENDS}")
        require(self.adaln_lora_rank >= 0, "adaln_lora_rank", "must be >= 0 (0 = off)")
        require(self.packed_attention in PACKED_ATTENTION, "packed_attention", f"must be one of {PACKED_ATTENTION}")
        require(not (self.packed_attention == "flex" and self.spatio_temporal), "packed_attention",
                "flex builds no factorised ST-DiT masks: use segments with spatio_temporal")
        require(self.timestep_dim % 2 == 0, "timestep_dim", "must be even (sin and cos halves)")

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def mlp_hidden(self) -> int:
        return int(self.hidden * self.mlp_ratio)

    @property
    def offset(self) -> float:
        """The constant c added to each block's gate."""
        return 1.0 / self.layers if self.residual_offset is None else float(self.residual_offset)

    @property
    def patch_dim(self) -> int:
        return self.in_channels * self.patch[0] * self.patch[1] * self.patch[2]


PRESETS_DIR = Path(__file__).resolve().parents[2] / "recipes" / "model"


def load_preset(name: str, **overrides) -> VideoDiTConfig:
    """VideoDiTConfig from recipes/model/<name>.yaml (demo, 30m, 100m, 1b, 7b, 22b), with overrides."""
    import yaml

    path = PRESETS_DIR / f"{name}.yaml"
    if not path.exists():
        raise ConfigError("model", f"no preset {name!r} in {PRESETS_DIR}")
    fields = yaml.safe_load(path.read_text()) or {}
    unknown = set(fields) - {f.name for f in dataclasses.fields(VideoDiTConfig)}
    require(not unknown, "model", f"unknown keys {sorted(unknown)} in {path}")
    return VideoDiTConfig(**{**fields, **overrides})
