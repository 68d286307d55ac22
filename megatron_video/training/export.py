"""`mvideo export`: a trained model as one safetensors file of its whole (TP = 1, all layers)
weights plus a config.json, for sampling, serving and fine-tuning without the run's checkpoints.

The weights come from a dist checkpoint (any saving layout: megatron's dist_checkpointing reshards
it into one process) or from post-hoc EMA weights (`mvideo ema`'s ema_best.pt). A training run
starts from an export with `checkpoint.init_from`: each rank takes its tensor-parallel slices and
pipeline layers of it (`init_chunks_from`).
"""
from __future__ import annotations

import json
import logging
import pathlib
from dataclasses import asdict

import torch

from megatron_video.config import ConfigError
from megatron_video.config.schema import RootConfig
from megatron_video.model.sharded_state import EXTRA_STATE, global_name
from megatron_video.model.tp_layout import shard_canonical_state
from megatron_video.training import checkpoint as ckpt

log = logging.getLogger(__name__)

EXPORT_CONFIG = "config.json"


def export_model(cfg: RootConfig) -> pathlib.Path:
    """Write <checkpoint.export_to>/model.safetensors and config.json; return the directory."""
    from safetensors.torch import save_file

    from megatron_video.inference.generator import load_into, load_weights
    from megatron_video.model import build_model
    from megatron_video.parallel.state import ParallelConfig, init_distributed
    from megatron_video.training.environment import resolve_device

    if not cfg.checkpoint.export_to:
        raise ConfigError("checkpoint.export_to", "is required: the directory the export is written to")
    source = ckpt.resolve_checkpoint(cfg.checkpoint.export_from or cfg.run.output_dir)
    if not ckpt.is_checkpoint(source):
        raise ConfigError("checkpoint.export_from", f"'{source}' is not a dist checkpoint (or a run directory)")
    init_distributed(ParallelConfig(), resolve_device("cpu"), seed=cfg.run.seed)  # one process, whole model
    model = build_model(cfg.model)
    info = {"source": str(source), "step": ckpt.checkpoint_step(source)}
    if cfg.checkpoint.export_weights:
        weights_path = pathlib.Path(cfg.checkpoint.export_weights)
        if not weights_path.is_file():
            raise ConfigError("checkpoint.export_weights", f"no weights file at '{weights_path}'")
        load_into(model, load_weights(weights_path, torch.device("cpu")), weights_path)
        header = torch.load(weights_path, map_location="cpu", weights_only=False)
        info.update(weights=str(weights_path), step=header.get("step", info["step"]),
                    ema_gamma=header.get("ema_gamma"), sigma_rel=header.get("sigma_rel"))
    else:
        ckpt.load_model_weights([model], source)
    out = pathlib.Path(cfg.checkpoint.export_to)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {name: value.detach().cpu().contiguous() for name, value in model.state_dict().items()
               if not name.endswith(EXTRA_STATE)}
    save_file(tensors, str(out / ckpt.EXPORT_WEIGHTS), metadata={"format": "pt", "source": info["source"]})
    (out / EXPORT_CONFIG).write_text(json.dumps({"model": asdict(cfg.model), "encoders": asdict(cfg.encoders),
                                                 **info}, indent=2))
    log.info("exported %s (step %s) -> %s", info.get("weights", source), info["step"], out)
    return out


def init_chunks_from(chunks: list[torch.nn.Module], path: str) -> None:
    """Load exported whole-model weights into this rank's chunks (its TP slices and PP layers)."""
    from megatron.core import parallel_state
    from safetensors.torch import load_file

    from megatron_video.inference.generator import load_into

    weights_path = ckpt.resolve_checkpoint(path)
    if weights_path.suffix != ".safetensors":
        raise ConfigError("checkpoint.init_from", f"'{path}' is not an export (model.safetensors or its directory)")
    canonical = load_file(str(weights_path))
    tp_rank = parallel_state.get_tensor_model_parallel_rank()
    tp = parallel_state.get_tensor_model_parallel_world_size()
    for chunk in chunks:
        wanted = {name: canonical[global_name(chunk, name)] for name in chunk.state_dict()
                  if not name.endswith(EXTRA_STATE) and global_name(chunk, name) in canonical}
        load_into(chunk, shard_canonical_state(wanted, chunk.tensor_parallel_layout(), tp_rank, tp), weights_path)
