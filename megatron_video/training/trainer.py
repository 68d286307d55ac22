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
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.distributed as dist
from megatron.core import dist_checkpointing, parallel_state
from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
from tqdm import tqdm

from megatron_video.config.errors import ConfigError, require
from megatron_video.config.loader import to_yaml
from megatron_video.config.schema import RootConfig
from megatron_video.data.catalog import is_validation_key
from megatron_video.data.dataset import SKIPPED
from megatron_video.data.loaders import loader_state, resolve_loader
from megatron_video.data.sources import check_source, open_train_loader
from megatron_video.model.fp8.settings import device_problem
from megatron_video.model.fp8.state import amax_histories, load_amax_histories
from megatron_video.optim.band_monitor import BandMonitor
from megatron_video.optim.builder import build_optimizer, init_optimizer_state
from megatron_video.optim.schedule import rescheduled
from megatron_video.parallel.layout import validate_layout
from megatron_video.training import checkpoint as ckpt
from megatron_video.training.bucketed_batches import bucketed, bucketed_loader, bucketed_microbatch, check_buckets
from megatron_video.training.build import Components, build_components, start_layout
from megatron_video.training.environment import (
    cpu_training_threads,
    intra_op_threads,
    resolve_device,
    resolve_dtype,
    seed_everything,
)
from megatron_video.training.evaluate import validation_loss_of
from megatron_video.training.export import init_chunks_from
from megatron_video.training.faults import FaultMonitor, grads_finite
from megatron_video.training.metrics import MetricsLog
from megatron_video.training.objective import condition_batch, make_microbatch
from megatron_video.training.preemption import StopRequest
from megatron_video.training.step import configure_schedules, run_microbatches
from megatron_video.training.step_plan import StepPlanner, check_step_plan

log = logging.getLogger(__name__)


@dataclass
class TrainSummary:
    steps: int  # the step reached: the run's total, or fewer when a time limit or signal stopped the run
    start_step: int
    planned_steps: int = 0  # the total train.steps=auto planned (here or in the run resumed); 0: not planned
    losses: list[float] = field(default_factory=list)
    val_loss: float = float("nan")
    wall_s: float = 0.0
    s_per_step: float = 0.0
    checkpoint: str = ""
    loss_plot: str = ""
    band_warnings: int = 0
    skipped_steps: int = 0
    skipped_clips: int = 0  # unreadable or undecodable clips the loaders of all replicas left out
    loss_spikes: int = 0
    stop_signal: bool = False  # stopped by SIGTERM/SIGUSR1: `mvideo train` exits with the requeue code
    cpu_threads: int = 0  # torch's intra-op threads while the steps ran

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
    if cfg.optim.warmup_steps >= cfg.train.most_steps:
        most = "train.max_steps" if cfg.train.planned else "train.steps"
        raise ConfigError("optim.warmup_steps", f"{cfg.optim.warmup_steps} must be below {most} "
                                                f"({cfg.train.most_steps})")
    check_step_plan(cfg.train, cfg.optim)
    latent_factor = cfg.encoders.pixel_factor * cfg.model.patch[1] if cfg.encoders.codec == "pixel" else 1
    for key in ("height", "width"):
        if cfg.encoders.codec == "pixel" and getattr(cfg.data, key) % latent_factor:
            raise ConfigError(f"data.{key}", f"must be a multiple of pixel_factor*patch = {latent_factor}")
    layout = validate_layout(cfg.parallel, cfg.model, int(os.environ.get("WORLD_SIZE", "1")), _sequence_tokens(cfg))
    if bucketed(cfg):
        check_buckets(cfg, layout.context_mode, resolve_device(cfg.run.device).type)


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
    def __init__(self, cfg: RootConfig, clock: Callable[[], float] = time.perf_counter):
        """`clock`: seconds, for the time limit, the step plan and the summary's timings (tests give
        a virtual one, so that a plan does not depend on the machine's speed)."""
        check_inputs(cfg)
        self.cfg = cfg
        self.clock = clock
        self.run_dir = pathlib.Path(cfg.run.output_dir)
        self.device = resolve_device(cfg.run.device)
        self.dtype = resolve_dtype(cfg.train.precision, self.device)
        fp8_problem = device_problem(cfg.train.fp8_settings(), self.device)
        if fp8_problem:
            raise ConfigError("train.fp8", fp8_problem)
        start_layout(cfg, self.device)
        seed_everything(cfg.run.seed)
        self.parts: Components = build_components(cfg, self.device, self.run_dir,
                                                  encode_inline=cfg.data.encodes_inline)
        self.chunks = [wrap_ddp(chunk, cfg, index) for index, chunk in enumerate(self.parts.chunks)]
        configure_schedules(self.chunks, cfg.parallel.overlap_grad_reduce)
        # A planned run follows train.max_steps' schedule until its plan (training/step_plan.py).
        self.total_steps = cfg.train.most_steps
        self.planned_steps = 0  # train.steps=auto's plan, once made here or loaded from a checkpoint
        self.optimizer, self.scheduler = build_optimizer(
            self.chunks, cfg.optim, width=cfg.model.hidden, total_steps=self.total_steps,
            parallel=cfg.parallel)
        self.is_main = torch.distributed.get_rank() == 0
        self.metrics = MetricsLog(self.run_dir, tensorboard=cfg.train.tensorboard and self.is_main, model=cfg.model,
                                  device=self.device, wandb_project=cfg.train.wandb_project if self.is_main else "",
                                  wandb_config=asdict(cfg))
        # This rank's first stage: under pipeline parallelism each rank watches its own layers.
        self.band = BandMonitor(self.parts.chunks[0], cfg.optim, writer=self.metrics.writer)
        self.band_warnings = 0
        self.faults = FaultMonitor(cfg.faults)
        self.checkpointer = ckpt.Checkpointer(self.run_dir / "checkpoints", keep_last=cfg.checkpoint.keep_last,
                                              keep_every=cfg.checkpoint.keep_every,
                                              async_save=cfg.checkpoint.async_save)
        self.step = 0
        self.planner: StepPlanner | None = None  # times the steps of a run whose train.steps=auto is not planned yet
        self._resumed = False
        self.loader = None  # the training batches' iterator, once training starts
        self.resumed_loader_state: dict | None = None
        self.skipped_clips = 0  # by the loaders of every data-parallel replica, this run and those it resumes

    # -- state -------------------------------------------------------------------------------
    def _sharded_state(self, loading: bool, per_rank: bool = True, fp8_histories: bool = True) -> dict:
        """Everything a resumed run needs, as megatron dist_checkpointing's sharded state dict
        (`fp8_histories`: with each rank's delayed-scaling amax histories, where the model has them)."""
        if loading:
            init_optimizer_state(self.optimizer)
        state = ckpt.model_sharded_state(self.parts.chunks)
        # Moments in model space (megatron's fully_reshardable format): any layout can load them.
        state["optimizer"] = self.optimizer.sharded_state_dict(
            state, is_loading=loading, metadata={"distrib_optim_sharding_type": "fully_reshardable"})
        state.update(scheduler=self.scheduler.state_dict(), step=self.step, world_size=dist.get_world_size(),
                     distributed_optimizer=self.cfg.parallel.distributed_optimizer,
                     consumed_batches=self.step * self.cfg.parallel.microbatches, losses=self.metrics.losses,
                     skipped_steps=self.faults.skipped, skipped_clips=self.skipped_clips,
                     planned_steps=self.planned_steps)
        histories = amax_histories(self.parts.chunks)
        state["fp8_amax_histories"] = bool(histories)
        if per_rank:  # each rank's generators and DALI loader position
            state["rng"] = ckpt.sharded_rng_state(self.device)
            state["loader"] = ckpt.per_rank_object("loader_state", loader_state(self.loader))
            if histories and fp8_histories:
                state["fp8"] = ckpt.per_rank_object("fp8_amax_histories", {"layout": self._layout(),
                                                                           "histories": histories})
        return state

    def _layout(self) -> tuple[int, int, int, int]:
        parallel = self.cfg.parallel
        return parallel.tensor, parallel.pipeline, parallel.context, parallel.virtual_pipeline

    def _save(self) -> str:
        return str(self.checkpointer.save(self.step, self._sharded_state(loading=False)))

    def resume(self) -> pathlib.Path | None:
        """Load the run's latest complete checkpoint (train.resume), whatever layout saved it; once."""
        if self._resumed:
            return None
        self._resumed = True
        ckpt_dir = self.run_dir / "checkpoints"
        if self.is_main:
            ckpt.clear_partial(ckpt_dir)
        found = ckpt.latest_checkpoint(ckpt_dir) if self.cfg.train.resume else None
        if found is None:
            if self.cfg.checkpoint.init_from:  # fine-tuning: exported weights, a fresh optimizer
                init_chunks_from(self.parts.chunks, self.cfg.checkpoint.init_from)
                self.optimizer.reload_model_params()  # the fp32 main copies of bf16 weights
                log.info("starting from the exported weights %s", self.cfg.checkpoint.init_from)
            return None
        common = dist_checkpointing.load_common_state_dict(str(found))
        saved_distributed = common["distributed_optimizer"]
        require(saved_distributed == self.cfg.parallel.distributed_optimizer, "parallel.distributed_optimizer",
                f"{found} was saved with distributed_optimizer={saved_distributed}: its optimizer state loads only "
                "so (or start a new run from its weights: mvideo export, then checkpoint.init_from)")
        # Per-rank RNG and loader states come back only at the layout that saved them (a resharded run
        # reseeds, and its loader starts from the step count).
        same_world = common["world_size"] == dist.get_world_size()
        # Delayed scaling's amax histories too (absent from checkpoints of other FP8 scalings).
        fp8_histories = same_world and common.get("fp8_amax_histories", False)
        state = ckpt.load_checkpoint(found, self._sharded_state(loading=True, per_rank=same_world,
                                                                fp8_histories=fp8_histories))
        ckpt.load_model_state(self.parts.chunks, state)
        self.optimizer.load_state_dict(state["optimizer"])
        planned = state.get("planned_steps", 0)  # absent from checkpoints saved before runs were planned
        if self.cfg.train.planned and planned:
            self._follow_plan(planned)
            log.info("step plan: train.steps=%d, the plan of the run resumed", planned)
        self.scheduler.load_state_dict(state["scheduler"])
        if same_world:
            ckpt.restore_rng_state(state["rng"], self.device)
            self.resumed_loader_state = state["loader"]
        if "fp8" in state and state["fp8"]["layout"] == self._layout():
            load_amax_histories(self.parts.chunks, state["fp8"]["histories"])
        self.metrics.losses = list(state["losses"])
        self.faults.skipped = state["skipped_steps"]
        self.skipped_clips = state.get("skipped_clips", 0)  # absent from checkpoints saved before it was counted
        self.step = state["step"]
        log.info("resumed from %s at step %d", found, self.step)
        return found

    def _plan(self, progress) -> None:
        plan = self.planner.observe(self.step, self.clock(), self.device)
        if plan is None:
            return
        self.planner = None
        self._follow_plan(plan.total)
        progress.total = plan.total
        log.info(plan.describe(self.cfg.train))

    def _follow_plan(self, total: int) -> None:
        """Make `total` the run's length: the loop's end and the LR schedule's (at the step reached)."""
        self.planned_steps = self.total_steps = total
        self.scheduler = rescheduled(self.scheduler, self.cfg.optim, total)

    def _step_generator(self) -> torch.Generator:
        # Same noise on the tensor/context-parallel ranks of one replica, different across replicas.
        dp_rank = parallel_state.get_data_parallel_rank()
        return torch.Generator(self.device).manual_seed(
            (self.cfg.run.seed * 1_000_003 + self.step * 101 + dp_rank) % 2**63)

    # -- loop --------------------------------------------------------------------------------
    def train(self) -> TrainSummary:
        threads = torch.get_num_threads()
        if self.device.type == "cpu":  # the loader workers run on the same cores
            threads = cpu_training_threads(self.cfg.train.cpu_threads, self.cfg.data.num_workers)
            log.info("training on %d intra-op thread(s) beside %d loader worker(s)", threads,
                     self.cfg.data.num_workers)
        with StopRequest(self.device) as stop, intra_op_threads(threads):
            return self._train(stop)

    def _train(self, stop: StopRequest) -> TrainSummary:
        cfg = self.cfg
        self.resume()
        start_step = self.step
        if self.is_main:
            (self.run_dir / "config.yaml").write_text(to_yaml(cfg))
        microbatches = cfg.parallel.microbatches
        if bucketed(cfg):
            loader = iter(bucketed_loader(cfg, self.parts, skip_batches=start_step * microbatches))
        else:
            loader = self.loader = open_train_loader(cfg, self.device, start_step * microbatches,
                                                     self.resumed_loader_state)
        summary = TrainSummary(steps=self.total_steps, start_step=start_step,
                               cpu_threads=torch.get_num_threads())
        started = self.clock()
        self.planner = StepPlanner(cfg.train, cfg.optim, start_step, started) \
            if cfg.train.planned and not self.planned_steps else None
        for chunk in self.chunks:
            chunk.train()
        progress = tqdm(total=self.total_steps, initial=start_step, desc="train", unit="step",
                        disable=not (cfg.run.progress and self.is_main and sys.stderr.isatty()))
        try:
            while self.step < self.total_steps:
                saved = self._train_step(loader, microbatches, progress, summary)
                summary.stop_signal, out_of_time = stop.agreed(
                    bool(cfg.train.time_limit_s) and self.clock() - started > cfg.train.time_limit_s)
                if out_of_time or summary.stop_signal or self.step - start_step == cfg.train.stop_after:
                    reason = ("time limit" if out_of_time else f"stop signal {stop.name}" if summary.stop_signal
                              else "train.stop_after")
                    log.warning("stopping at step %d of %d (%s): checkpointed, rerun to resume", self.step,
                                self.total_steps, reason)
                    summary.checkpoint = summary.checkpoint if saved else self._save()
                    if out_of_time and self.step % cfg.train.val_every:  # the summary's loss is this step's
                        summary.val_loss = self.validate()
                    break
        finally:
            self.checkpointer.close()  # a background save finishes and is published before returning
            progress.close()
            self.metrics.close()
        summary.steps = self.step
        summary.planned_steps = self.planned_steps
        summary.wall_s = self.clock() - started
        summary.s_per_step = summary.wall_s / max(self.step - start_step, 1)
        summary.losses = list(self.metrics.losses)
        summary.band_warnings = self.band_warnings
        summary.skipped_steps, summary.loss_spikes = self.faults.skipped, self.faults.spikes
        summary.skipped_clips = self.skipped_clips
        if self.is_main:
            summary.loss_plot = str(self.metrics.plot_losses(self.run_dir / "loss_curve.png"))
            self.band.plot(self.run_dir / "mup_band.png")
            (self.run_dir / "train_summary.json").write_text(json.dumps(
                {k: v for k, v in summary.__dict__.items() if k != "losses"}, indent=2))
        return summary

    def _train_step(self, loader, microbatches: int, progress, summary: TrainSummary) -> bool:
        """One optimizer step and what follows it (logging, validation, checkpoint); True if it saved."""
        cfg = self.cfg
        self.metrics.start_step()
        for chunk in self.chunks:
            chunk.zero_grad_buffer()
        self.optimizer.zero_grad()
        batches = self._microbatches(loader, microbatches)
        loss_value = run_microbatches(self.chunks, self.parts, batches, self.dtype, forward_only=False)
        self.step += 1
        if grads_finite(self.chunks, loss_value, self.device):
            _, grad_norm, _ = self.optimizer.step()
            self.scheduler.step(1)
            self.faults.observe(self.step, loss_value)
        else:  # no update, and the schedule does not advance (megatron's rule for skipped steps)
            self.faults.skip(self.step, loss_value)
            grad_norm = float("nan")
        self.checkpointer.poll()
        progress.update(1)
        progress.set_postfix(loss=f"{loss_value:.4f}", refresh=False)
        self.metrics.record(self.step, emit=self.step % cfg.train.log_every == 0, loss=loss_value,
                            grad_norm=float(grad_norm or 0.0), lr=self.scheduler.current_lr(),
                            skipped_steps=self.faults.skipped, skipped_clips=self.skipped_clips,
                            **self.metrics.throughput(batches))
        if self.band.due(self.step):
            self._check_band()
        if self.planner is not None:  # before this step's checkpoint, which then carries the plan
            self._plan(progress)
        if self.step % cfg.train.val_every == 0 or self.step == self.total_steps:
            summary.val_loss = self.validate()
        if self.step % cfg.train.checkpoint_every == 0 or self.step == self.total_steps:
            summary.checkpoint = self._save()
            return True
        return False

    def _microbatches(self, loader, count: int) -> list[dict]:
        """This step's microbatches: encoded clips, CFG text dropout, noise and timesteps."""
        generator = self._step_generator()
        dropout = torch.Generator().manual_seed(self.step)
        microbatches, skipped = [], 0
        for _ in range(count):
            batch = next(loader)
            skipped += batch[SKIPPED]
            drop = torch.rand(len(batch["caption"]), generator=dropout) < self.cfg.train.cfg_dropout
            if bucketed(self.cfg):
                microbatches.append(bucketed_microbatch(self.parts, self.cfg, batch, drop, self.device, generator))
                continue
            latents, text, mask = condition_batch(self.parts, batch, self.device, drop)
            microbatches.append(make_microbatch(self.parts, latents, text, mask, generator))
        self._count_skipped_clips(skipped)
        return microbatches

    def _count_skipped_clips(self, skipped: int) -> None:
        """Add the clips every replica's loader skipped this step (the ranks of one replica read the
        same clips, so the sum runs over the data-parallel group)."""
        total = torch.tensor([skipped], dtype=torch.int64, device=self.device)
        dist.all_reduce(total, group=parallel_state.get_data_parallel_group())
        self.skipped_clips += int(total.item())

    def _check_band(self) -> None:
        warnings = self.band.record(self.step)
        for warning in warnings:
            log.warning("muP band: %s", warning)
        self.band_warnings += len(warnings)

    def validate(self) -> float:
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
