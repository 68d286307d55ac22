"""VideoGenerator: a loaded model, its encoders and a sampler; one request in, uint8 frames out.

`mvideo sample` and the server's worker both call `generate`. The model call inside the sampler is
the only thing a parallel layout changes (a CP group shards the sequence inside the model's forward,
a CFG group splits the two guidance branches), so every rank of the world builds the same generator
and runs `generate` on the same request (see inference/server/worker.py). The ranks are arranged as
xDiT and FastVideo do (order tp-sp-pp-cfg-dp): the CFG pair of a rank is its twin in the other half
of the world, which is megatron's data-parallel group when the data-parallel size is 2
(inference/layout.py checks that before any work). The prompts are encoded once, on rank 0, and
broadcast; only rank 0 decodes the latents to frames.
"""
from __future__ import annotations

import pathlib
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.distributed as dist

from megatron_video.config import ConfigError
from megatron_video.config.schema import RootConfig
from megatron_video.data.decode import to_uint8_frames
from megatron_video.diffusion.sampler import sample
from megatron_video.training.build import Components


@dataclass
class GenerationRequest:
    prompt: str
    negative_prompt: str = ""
    frames: int = 8
    height: int = 32
    width: int = 56
    steps: int = 30
    guidance: float = 3.0
    solver: str = "euler"
    seed: int = 0
    shift: float = 1.0
    fps: float = 12.0

    def to_dict(self) -> dict:
        return asdict(self)


def load_weights(path: pathlib.Path, device: torch.device) -> dict[str, torch.Tensor]:
    """Model weights from a .pt with a "model" entry (what post-hoc EMA writes) or an exported
    safetensors file."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device=str(device))
    state = torch.load(path, map_location=device, weights_only=False)
    if "model" not in state:
        raise ConfigError("sample.checkpoint", f"'{path}' holds no 'model' weights")
    return state["model"]


def load_into(model: torch.nn.Module, weights: dict[str, torch.Tensor], path: pathlib.Path) -> None:
    """Strict, except for megatron's `_extra_state` entries (None in a .pt, absent from safetensors)."""
    missing, unexpected = model.load_state_dict(weights, strict=False)
    wrong = [k for k in missing if not k.endswith("_extra_state")] + list(unexpected)
    if wrong:
        hint = ("; the weights and model.pooled_text_conditioning disagree"
                if any(k.startswith("pooled_text_embed.") for k in wrong) else "")
        raise ConfigError("sample.checkpoint", f"'{path}' does not fit the model config: {wrong[:5]}{hint}")


def cfg_parallel_group() -> dist.ProcessGroup:
    """The two ranks that split the guidance branches: megatron's data-parallel group (of size 2)."""
    from megatron.core import parallel_state

    return parallel_state.get_data_parallel_group()


def leads() -> bool:
    """Whether this rank encodes the prompts and decodes the latents (rank 0, or no process group)."""
    return not dist.is_initialized() or dist.get_rank() == 0


def encode_once(encoder, prompts: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """`encoder.encode(prompts)` run on rank 0 and broadcast to every rank: the text encoder (UMT5 at
    scale) runs once per request, and every rank samples with bit-identical embeddings."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        states, mask = encoder.encode(prompts)
    else:
        # Pickled CPU tensors (the encoders return CPU tensors): gloo and NCCL alike carry them.
        payload = [encoder.encode(prompts) if leads() else None]
        dist.broadcast_object_list(payload, src=0)
        states, mask = payload[0]
    return states.to(device), mask.to(device)


class VideoGenerator:
    def __init__(self, parts: Components, device: torch.device, dtype: torch.dtype = torch.float32,
                 decode_chunk: int = 0, cfg_group: dist.ProcessGroup | None = None,
                 checkpoint: pathlib.Path | None = None):
        self.parts, self.device, self.dtype = parts, device, dtype
        self.decode_chunk, self.cfg_group, self.checkpoint = decode_chunk, cfg_group, checkpoint
        # On a CUDA machine megatron creates its layers' weights on the GPU whatever the device asked
        # for here, and the plain torch modules on the CPU: the whole model goes to `device`.
        parts.model.to(device).eval()

    @classmethod
    def from_config(cls, cfg: RootConfig) -> VideoGenerator:
        """Build the model and encoders of `cfg` and load `sample.checkpoint` (a dist checkpoint, a
        run directory's latest, an export or a weights file: checkpoint.resolve_checkpoint); parallel
        state must be initialised. With sample.cfg_parallel
        the data-parallel group (of size 2: each rank's twin in the other half of the world) splits
        the guidance branches; tensor and context groups work inside the model."""
        from megatron_video.training import checkpoint as ckpt
        from megatron_video.training.build import build_components
        from megatron_video.training.environment import resolve_device, resolve_dtype

        device = resolve_device(cfg.run.device)
        cfg_group = cfg_parallel_group() if cfg.sample.cfg_parallel else None
        path = ckpt.resolve_checkpoint(cfg.sample.checkpoint or cfg.run.output_dir)
        parts = build_components(cfg, device, pathlib.Path(cfg.run.output_dir))
        if ckpt.is_checkpoint(path):  # a dist checkpoint, resharded to this process's layout
            ckpt.load_model_weights(parts.chunks, path)
        else:
            load_into(parts.model, load_weights(path, device), path)
        return cls(parts, device, resolve_dtype(cfg.train.precision, device), cfg.sample.decode_chunk, cfg_group,
                   checkpoint=path)

    def latent_shape(self, request: GenerationRequest) -> tuple[int, ...]:
        codec = self.parts.codec
        frames = 1 + (request.frames - 1) // codec.temporal_factor if codec.temporal_factor > 1 else request.frames
        return (1, codec.latent_channels, frames, request.height // codec.spatial_factor,
                request.width // codec.spatial_factor)

    @torch.no_grad()
    def latents(self, request: GenerationRequest) -> torch.Tensor:
        """The sampled latents, the same on every rank (a collective call under several ranks)."""
        # One batch: the encoders pad to a fixed length, so the two rows are what two calls would give.
        text, mask = encode_once(self.parts.text, [request.prompt, request.negative_prompt], self.device)
        return sample(self.parts.model, self.latent_shape(request), text[:1], mask[:1], text[1:], mask[1:],
                      steps=request.steps, guidance=request.guidance, solver=request.solver, seed=request.seed,
                      shift=request.shift, device=self.device, dtype=self.dtype, cfg_group=self.cfg_group)

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """uint8 [T, H, W, 3]; with `decode_chunk` > 0, decoded that many latent frames at a time."""
        chunk = self.decode_chunk or latents.shape[2]
        return np.concatenate([to_uint8_frames(piece[0]) for piece in self.parts.codec.decode_chunks(latents, chunk)])

    def generate(self, request: GenerationRequest) -> np.ndarray | None:
        """uint8 frames on rank 0; None on the other ranks, which only help sample the latents."""
        latents = self.latents(request)
        return self.decode(latents) if leads() else None
