"""Which FP8 path a model is built with (train.fp8, train.fp8_scaling), checked before any work."""
from __future__ import annotations

from dataclasses import dataclass

MODES = ("off", "native", "te")
# "auto" resolves to the first entry. Native "delayed" is per-tensor scaling from an amax history
# (model/fp8/operands.py). TE's "current" is its per-tensor current scaling
# (megatron's fp8_recipe="tensorwise"); mxfp8 needs Blackwell.
SCALINGS = {"native": ("tensor", "row", "delayed"), "te": ("delayed", "current", "mxfp8")}


@dataclass(frozen=True)
class Fp8Settings:
    mode: str = "off"
    scaling: str = "auto"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"FP8 mode must be one of {MODES}, not {self.mode!r}")
        if self.mode != "off" and self.scaling != "auto" and self.scaling not in SCALINGS[self.mode]:
            raise ValueError(f"FP8 scaling for mode {self.mode!r} must be auto or one of "
                             f"{SCALINGS[self.mode]}, not {self.scaling!r}")

    @property
    def resolved_scaling(self) -> str:
        if self.mode == "off":
            return "none"
        return SCALINGS[self.mode][0] if self.scaling == "auto" else self.scaling


def transformer_engine_import_error() -> str | None:
    """Why Transformer Engine's PyTorch API does not import here, or None when it does."""
    try:
        import transformer_engine.pytorch  # noqa: F401
    except Exception as err:  # noqa: BLE001  (a broken install fails in many ways; report any)
        return f"{type(err).__name__}: {err}"
    return None


def device_problem(settings: Fp8Settings, device) -> str | None:
    """Why this device cannot run the asked-for FP8 path, or None."""
    import torch

    if settings.mode == "te" and device.type != "cuda":
        return "Transformer Engine's FP8 runs on CUDA GPUs only"
    if settings.mode == "off" or device.type != "cuda":
        return None  # on the CPU the native path runs (slowly): torch has CPU kernels for _scaled_mm
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < (8, 9):
        return f"FP8 GEMMs need compute capability 8.9 or newer (Ada, Hopper, Blackwell), this GPU has {major}.{minor}"
    if settings.resolved_scaling == "mxfp8" and major < 10:
        return "mxfp8 needs Blackwell (compute capability 10 or newer)"
    return None


FP8_OFF = Fp8Settings()
