"""The training loop: flow matching on curated clips, megatron DDP + optimizer, resumable.

Every layout (TP x CP x PP x DP, pp = 1 too) runs one path: each optimizer step takes
`parallel.microbatches` batches through megatron-core's pipeline schedule (training.step), whose
finalize_model_grads reduces the gradients, then the megatron optimizer clips and steps. The same
on CPU (gloo, megatron's CPU compatibility layer) and on GPUs (NCCL).
"""
from __future__ import annotations

import json
import logging
import os
import pathlib
import time
from dataclasses import dataclass, field

import torch
from megatron.core import parallel_state
from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
from tqdm import tqdm

from megatron_video.config.errors import ConfigError, require
from megatron_video.config.loader import to_yaml
from megatron_video.config.schema import RootConfig
from megatron_video.data.catalog import is_validation_key
from megatron_video.data.loaders import loader_state, resolve_loader
from megatron_video.data.sources import check_source, open_train_loader
from megatron_video.model.fp8.settings import device_problem
from megatron_video.optim.band_monitor import BandMonitor
from megatron_video.optim.builder import build_optimizer
from megatron_video.parallel.layout import validate_layout
from megatron_video.training import checkpoint as ckpt
from megatron_video.training.bucketed_batches import bucketed, bucketed_loader, bucketed_microbatch, check_buckets
from megatron_video.training.build import Components, build_components, start_layout
from megatron_video.training.environment import resolve_device, resolve_dtype, seed_everything
from megatron_video.training.evaluate import validation_loss_of
from megatron_video.training.metrics import MetricsLog
from megatron_video.training.objective import condition_batch, make_microbatch
from megatron_video.training.preemption import StopRequest
from megatron_video.training.step import configure_schedules, run_microbatches

log = logging.getLogger(__name__)


@dataclass
class TrainSummary:
    steps: int
    start_step: int
    losses: list[float] = field(default_factory=list)
    val_loss: float = float("nan")
    wall_s: float = 0.0
    s_per_step: float = 0.0
    checkpoint: str = ""
    loss_plot: str = ""
    band_warnings: int = 0

    def loss_drop(self) -> tuple[float, float]:
        """Mean loss of the first and of the last 10% of steps."""
        n = max(len(self.losses) // 10, 1)
        return sum(self.losses[:n]) / n, sum(self.losses[-n:]) / n


def check_inputs(cfg: RootConfig) -> None:
    """Everything that can be checked before the first import of a model (fail in seconds)."""
    keys = check_source(cfg)
    resolve_loader(cfg.data.loader, resolve_device(cfg.run.device))
    if keys and not any(is_validation_key(k, cfg.data.val_fraction) for k in keys):
        raise ConfigError("data.val_fraction", f"leaves none of the {len(keys)} selected clips for validation")
    if cfg.optim.warmup_steps >= cfg.train.steps:
        raise ConfigError("optim.warmup_steps", f"{cfg.optim.warmup_steps} must be below train.steps "
                                                f"({cfg.train.steps})")
    latent_factor = cfg.encoders.pixel_factor * cfg.model.patch[1] if cfg.encoders.codec == "pixel" else 1
    for key in ("height", "width"):
        if cfg.encoders.codec == "pixel" and getattr(cfg.data, key) % latent_factor:
            raise ConfigError(f"data.{key}", f"must be a multiple of pixel_factor*patch = {latent_factor}")
    layout = validate_layout(cfg.parallel, cfg.model, int(os.environ.get("WORLD_SIZE", "1")), _sequence_tokens(cfg))
    if bucketed(cfg):
        check_buckets(cfg, layout.context_mode, resolve_device(cfg.run.device).type)
    require(layout.pipeline == 1 or not cfg.train.snapshot_every, "train.snapshot_every",
            "post-hoc EMA snapshots hold the whole model: not built under pipeline parallelism (set 0)")


def _sequence_tokens(cfg: RootConfig) -> int | None:
    """Text + video tokens of one training sample (known up front for the pixel codec)."""
    if cfg.encoders.codec != "pixel":
        return None
    pt, ph, pw = cfg.model.patch
    f = cfg.encoders.pixel_factor
    video = (cfg.data.frames // pt) * (cfg.data.height // f // ph) * (cfg.data.width // f // pw)
    return cfg.encoders.max_text_len + video


def wrap_ddp(model: torch.nn.Module, cfg: RootConfig, chunk: int) -> DistributedDataParallel:
    ddp_config = DistributedDataParallelConfig(
        grad_reduce_in_fp32=True, overlap_grad_reduce=cfg.parallel.overlap_grad_reduce,
        use_distributed_optimizer=cfg.parallel.distributed_optimizer)
    # Only the first chunk's buffers start their reduction at once (megatron's own rule for chunks).
    return DistributedDataParallel(model.config, ddp_config, model, disable_bucketing=chunk > 0)


class Trainer:
    def __init__(self, cfg: RootConfig):
        check_inputs(cfg)
        self.cfg = cfg
        self.run_dir = pathlib.Path(cfg.run.output_dir)
        self.device = resolve_device(cfg.run.device)
        self.dtype = resolve_dtype(cfg.train.precision, self.device)
        fp8_problem = device_problem(cfg.train.fp8_settings(), self.device)
        if fp8_problem:
            raise ConfigError("train.fp8", fp8_problem)
        start_layout(cfg, self.device)
        seed_everything(cfg.run.seed)
        self.parts: Components = build_components(cfg, self.device, self.run_dir)
        self.chunks = [wrap_ddp(chunk, cfg, index) for index, chunk in enumerate(self.parts.chunks)]
        configure_schedules(self.chunks, cfg.parallel.overlap_grad_reduce)
        self.optimizer, self.scheduler = build_optimizer(
            self.chunks, cfg.optim, width=cfg.model.hidden, total_steps=cfg.train.steps,
            parallel=cfg.parallel)
        self.is_main = torch.distributed.get_rank() == 0
        self.metrics = MetricsLog(self.run_dir, tensorboard=cfg.train.tensorboard and self.is_main)
        # This rank's first stage: under pipeline parallelism each rank watches its own layers.
        self.band = BandMonitor(self.parts.chunks[0], cfg.optim, writer=self.metrics.writer)
        self.band_warnings = 0
        self.step = 0
        self.loader = None  # the training batches' iterator, once training starts
        self.resumed_loader_state: dict | None = None

    # -- state -------------------------------------------------------------------------------
    def _save(self) -> str:
        return str(ckpt.save_checkpoint(self.run_dir / "checkpoints", self.step, self._state()))

    def _inner_optimizers(self) -> list:
        return [leaf.optimizer for leaf in getattr(self.optimizer, "chained_optimizers", [self.optimizer])
                if leaf.optimizer is not None]

    def _model_state(self) -> dict | list[dict]:
        """The model's state dict; a list of them (one per chunk) for several pipeline chunks."""
        states = [chunk.state_dict() for chunk in self.parts.chunks]
        return states[0] if len(states) == 1 else states

    def _state(self) -> dict:
        return {"model": self._model_state(), "optimizer": self.optimizer.state_dict(),
                # The distributed optimizer's state_dict() leaves out the Adam moments of this rank's
                # shard; each rank's file keeps its inner optimizers whole (same DP size to resume).
                "inner_optimizers": [inner.state_dict() for inner in self._inner_optimizers()],
                "scheduler": self.scheduler.state_dict(), "rng": ckpt.rng_states(self.device),
                "loader": loader_state(self.loader),
                "losses": self.metrics.losses}

    def _resume(self) -> None:
        found = ckpt.latest_checkpoint(self.run_dir / "checkpoints") if self.cfg.train.resume else None
        if found is None:
            return
        state = ckpt.load_checkpoint(found, self.device)
        states = state["model"] if isinstance(state["model"], list) else [state["model"]]
        for chunk, chunk_state in zip(self.parts.chunks, states, strict=True):
            chunk.load_state_dict(chunk_state)
        self.optimizer.load_state_dict(state["optimizer"])
        for inner, inner_state in zip(self._inner_optimizers(), state["inner_optimizers"], strict=True):
            inner.load_state_dict(inner_state)
        self.scheduler.load_state_dict(state["scheduler"])
        ckpt.restore_rng_states(state["rng"], self.device)
        self.metrics.losses = list(state["losses"])
        self.resumed_loader_state = state.get("loader")
        self.step = state["step"]
        log.info("resumed from %s at step %d", found, self.step)

    def _step_generator(self) -> torch.Generator:
        # Same noise on the tensor/context-parallel ranks of one replica, different across replicas.
        dp_rank = parallel_state.get_data_parallel_rank()
        return torch.Generator(self.device).manual_seed(
            (self.cfg.run.seed * 1_000_003 + self.step * 101 + dp_rank) % 2**63)

    # -- loop --------------------------------------------------------------------------------
    def train(self) -> TrainSummary:
        with StopRequest(self.device) as stop:
            return self._train(stop)

    def _train(self, stop: StopRequest) -> TrainSummary:
        cfg = self.cfg
        self._resume()
        start_step = self.step
        if self.is_main:
            (self.run_dir / "config.yaml").write_text(to_yaml(cfg))
        microbatches = cfg.parallel.microbatches
        if bucketed(cfg):
            loader = iter(bucketed_loader(cfg, self.parts, skip_batches=start_step * microbatches))
        else:
            loader = self.loader = open_train_loader(cfg, self.device, start_step * microbatches,
                                                     self.resumed_loader_state)
        summary = TrainSummary(steps=cfg.train.steps, start_step=start_step)
        started = time.perf_counter()
        for chunk in self.chunks:
            chunk.train()
        progress = tqdm(total=cfg.train.steps, initial=start_step, desc="train", unit="step",
                        disable=not (cfg.run.progress and self.is_main))
        while self.step < cfg.train.steps:
            step_started = time.perf_counter()
            for chunk in self.chunks:
                chunk.zero_grad_buffer()
            self.optimizer.zero_grad()
            loss_value = run_microbatches(self.chunks, self.parts, self._microbatches(loader, microbatches),
                                          self.dtype, forward_only=False)
            _, grad_norm, _ = self.optimizer.step()
            self.scheduler.step(1)
            self.step += 1
            progress.update(1)
            progress.set_postfix(loss=f"{loss_value:.4f}", refresh=False)
            self.metrics.record(self.step, loss=loss_value, grad_norm=float(grad_norm or 0.0),
                                lr=self.scheduler.current_lr(), step_s=time.perf_counter() - step_started,
                                emit=self.step % cfg.train.log_every == 0)
            if self.band.due(self.step):
                self._check_band()
            if self.step % cfg.train.val_every == 0 or self.step == cfg.train.steps:
                summary.val_loss = self._validate()
            if cfg.train.snapshot_every and self.step % cfg.train.snapshot_every == 0 and self.is_main:
                ckpt.save_snapshot(self.run_dir / "snapshots", self.step, self.parts.model.state_dict())
            if self.step % cfg.train.checkpoint_every == 0 or self.step == cfg.train.steps:
                summary.checkpoint = self._save()
            out_of_time = cfg.train.time_limit_s and time.perf_counter() - started > cfg.train.time_limit_s
            signalled = stop.agreed()
            if out_of_time or signalled or self.step - start_step == cfg.train.stop_after:
                reason = "time limit" if out_of_time else "stop signal" if signalled else "train.stop_after"
                log.warning("stopping at step %d of %d (%s): checkpointed, rerun to resume", self.step,
                            cfg.train.steps, reason)
                summary.checkpoint = self._save()
                break
        progress.close()
        summary.wall_s = time.perf_counter() - started
        summary.s_per_step = summary.wall_s / max(self.step - start_step, 1)
        summary.losses = list(self.metrics.losses)
        summary.band_warnings = self.band_warnings
        if self.is_main:
            summary.loss_plot = str(self.metrics.plot_losses(self.run_dir / "loss_curve.png"))
            self.band.plot(self.run_dir / "mup_band.png")
            (self.run_dir / "train_summary.json").write_text(json.dumps(
                {k: v for k, v in summary.__dict__.items() if k != "losses"}, indent=2))
        self.metrics.close()
        return summary

    def _microbatches(self, loader, count: int) -> list[dict]:
        """This step's microbatches: encoded clips, CFG text dropout, noise and timesteps."""
        generator = self._step_generator()
        dropout = torch.Generator().manual_seed(self.step)
        microbatches = []
        for _ in range(count):
            batch = next(loader)
            drop = torch.rand(len(batch["caption"]), generator=dropout) < self.cfg.train.cfg_dropout
            if bucketed(self.cfg):
                microbatches.append(bucketed_microbatch(self.parts, self.cfg, batch, drop, self.device, generator))
                continue
            latents, text, mask = condition_batch(self.parts, batch, self.device, drop)
            microbatches.append(make_microbatch(self.parts, latents, text, mask, generator))
        return microbatches

    def _check_band(self) -> None:
        warnings = self.band.record(self.step)
        for warning in warnings:
            log.warning("muP band: %s", warning)
        self.band_warnings += len(warnings)

    def _validate(self) -> float:
        for chunk in self.chunks:
            chunk.eval()
        value = validation_loss_of(self.chunks, self.parts, self.cfg, self.dtype)
        for chunk in self.chunks:
            chunk.train()
        self.metrics.scalar(self.step, "val/loss", value)
        log.info("step=%d val_loss=%.5f", self.step, value)
        return value


def train(cfg: RootConfig) -> TrainSummary:
    """Train (or resume) the run described by `cfg`; the entry point of `mvideo train` and `hpo`."""
    return Trainer(cfg).train()
