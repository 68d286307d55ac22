"""Sections of the configuration that belong to no single area: the run, data, encoders, training
and sampling. Area-owned sections (model, optim, curate, parallel) live beside their code."""
from __future__ import annotations

from dataclasses import dataclass, field

from megatron_video.config.errors import require
from megatron_video.model.fp8.settings import MODES as FP8_MODES
from megatron_video.model.fp8.settings import SCALINGS as FP8_SCALINGS
from megatron_video.model.fp8.settings import Fp8Settings, transformer_engine_import_error
from megatron_video.model.recompute import RECOMPUTE


@dataclass
class RunConfig:
    output_dir: str = "outputs/run"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    log_level: str = "INFO"
    progress: bool = True

    def __post_init__(self) -> None:
        require(self.device in ("auto", "cpu", "cuda"), "device", "must be auto, cpu or cuda")
        require(bool(self.output_dir), "output_dir", "must not be empty")
        require(self.log_level in ("DEBUG", "INFO", "WARNING", "ERROR"), "log_level",
                "must be DEBUG, INFO, WARNING or ERROR")


@dataclass
class DataConfig:
    """Where training clips come from and how a sample is cut from a clip."""

    shards: str = ""  # a curated output dir (its shards/ and catalog/), or a dir of .tar shards
    filter: str = ""  # a catalog filter expression (megatron_video/data/filters.py), e.g. "duration_s > 3"
    version: str = ""  # a named dataset version saved in the catalog (`mvideo catalog version`)
    frames: int = 8
    frame_stride: int = 1
    height: int = 32
    width: int = 56
    batch_size: int = 4
    num_workers: int = 1
    shuffle_buffer: int = 64
    val_fraction: float = 0.1  # of clips (by key hash) held out for validation loss
    # Mixed durations and resolutions (data/buckets.py): [frames, height, width] (or "FxHxW") per
    # bucket, frames 1 = images; empty = every clip at frames x height x width as above.
    buckets: list = field(default_factory=list)
    packing: bool = False  # pack whole samples of any bucket into rows of pack_tokens (one per microbatch)
    pack_tokens: int = 0  # text + video tokens per packed row
    # clips: decode and encode in the trainer | latents: read `mvideo encode`'s shards from `latents`
    # | remote: Ray workers decode and encode, the trainer receives tensors (docs/latents.md)
    source: str = "clips"
    latents: str = ""  # a dir written by `mvideo encode` (data.source=latents)
    remote_workers: int = 2  # Ray encoding actors per trainer rank
    remote_cpus: float = 1.0  # CPUs each actor reserves
    remote_gpus: float = 0.0  # GPUs each actor reserves (a fraction shares one)
    remote_inflight: int = 4  # batches submitted ahead of training: the bound of the queue
    remote_timeout_s: float = 300.0  # a batch slower than this is taken from its worker and retried
    remote_retries: int = 2  # attempts after the first before a batch is skipped (counted)
    # source=clips: auto (DALI where installed and a GPU decodes) | dali | cpu; validation reads with cpu
    loader: str = "auto"

    def __post_init__(self) -> None:
        require(self.loader in ("auto", "dali", "cpu"), "loader", "must be auto, dali or cpu")
        require(self.loader != "dali" or (self.source == "clips" and not self.buckets and not self.packing), "loader",
                "dali reads clips of one size: source=clips without buckets or packing")
        for key in ("frames", "frame_stride", "height", "width", "batch_size", "remote_workers", "remote_inflight"):
            require(getattr(self, key) >= 1, key, "must be >= 1")
        require(self.num_workers >= 0, "num_workers", "must be >= 0")
        require(0.0 <= self.val_fraction < 1.0, "val_fraction", "must be in [0, 1)")
        require(not self.packing or self.pack_tokens >= 1, "pack_tokens", "must be >= 1 with data.packing")
        require(self.source in ("clips", "latents", "remote"), "source", "must be clips, latents or remote")
        require(self.source != "latents" or bool(self.latents), "latents", "is needed for source=latents")
        require(self.remote_timeout_s > 0, "remote_timeout_s", "must be > 0")
        require(self.remote_retries >= 0, "remote_retries", "must be >= 0")
        for key in ("remote_cpus", "remote_gpus"):
            require(getattr(self, key) >= 0, key, "must be >= 0")

    @property
    def encodes_inline(self) -> bool:
        """Whether a training or EMA process encodes its batches itself (loads the VAE and text
        encoder): every source but latents, whose batches bring latents and text states."""
        return self.source != "latents"


@dataclass
class EncodersConfig:
    """The latent codec and the text encoder (frozen; run before the DiT)."""

    codec: str = "pixel"  # pixel | wan
    codec_path: str = ""  # local Wan2.2 VAE folder when codec=wan
    pixel_factor: int = 4
    text: str = "minilm"  # minilm | t5
    text_path: str = ""  # local UMT5/T5 folder when text=t5
    max_text_len: int = 16
    cache_dir: str = ""  # empty: <run.output_dir>/text_cache

    def __post_init__(self) -> None:
        require(self.codec in ("pixel", "wan"), "codec", "must be pixel or wan")
        require(self.text in ("minilm", "t5"), "text", "must be minilm or t5")
        require(self.codec != "wan" or bool(self.codec_path), "codec_path", "is needed for codec=wan")
        require(self.text != "t5" or bool(self.text_path), "text_path", "is needed for text=t5")
        require(self.pixel_factor >= 1, "pixel_factor", "must be >= 1")
        require(self.max_text_len >= 1, "max_text_len", "must be >= 1")


@dataclass
class TrainConfig:
    # The run's length in optimizer steps, or "auto": planned once from the measured step rate so the
    # run, its LR cooldown included, ends within time_limit_s (training/step_plan.py).
    steps: int | str = 300
    time_limit_s: float = 0.0  # 0 = none; otherwise stop (and checkpoint) after this long
    # steps=auto only: the plan's bounds (max_steps is required; min_steps 0 = the fewest whose
    # cooldown starts after the plan), the steps left untimed first (the loader's start, the first
    # caption encodings), the steps timed, and the fraction of the time left that the plan keeps
    # for validation, checkpoints and slower steps.
    max_steps: int = 0
    min_steps: int = 0
    plan_after_steps: int = 5
    plan_measure_steps: int = 20
    plan_margin: float = 0.1
    stop_after: int = 0  # 0 = run to `steps`; else stop after this many steps of this job (job chains)
    precision: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | bf16 | fp32
    log_every: int = 10
    val_every: int = 100
    val_batches: int = 4
    checkpoint_every: int = 100
    resume: bool = True
    cfg_dropout: float = 0.1  # drop the text for classifier-free guidance
    timestep_shift: float = 1.0  # flow-matching resolution shift (>1 for more tokens)
    logit_mean: float = 0.0
    logit_std: float = 1.0
    tensorboard: bool = True
    wandb_project: str = ""  # log to this Weights & Biases project too (needs the wandb package)
    fp8: str = "off"  # off | native (torch._scaled_mm, no TE needed) | te (Transformer Engine's recipes)
    fp8_scaling: str = "auto"  # native: tensor | row | delayed; te: delayed | current | mxfp8; auto: the first listed
    recompute: str = "none"  # none | attention | mlp | block: activations recomputed in backward
    # Torch intra-op threads when training (and sampling, as the demo does after it) on the CPU; 0 =
    # this process's share of the cores less one per loader worker (training.environment.cpu_training_threads).
    cpu_threads: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.steps, str):
            require(self.steps == "auto", "steps", "must be a number of steps or auto")
            require(self.time_limit_s > 0, "time_limit_s", "must be > 0 with train.steps=auto: the plan fits the "
                                                          "steps into it")
            require(self.max_steps >= 1, "max_steps", "is needed with train.steps=auto: the most steps the plan "
                                                      "may choose")
            require(self.min_steps <= self.max_steps, "min_steps", f"must not exceed train.max_steps "
                                                                   f"({self.max_steps})")
        else:
            require(self.steps >= 1, "steps", "must be >= 1")
        require(self.min_steps >= 0, "min_steps", "must be >= 0")
        require(self.plan_after_steps >= 0, "plan_after_steps", "must be >= 0")
        require(self.plan_measure_steps >= 1, "plan_measure_steps", "must be >= 1")
        require(0.0 <= self.plan_margin < 1.0, "plan_margin", "must be in [0, 1)")
        require(self.cpu_threads >= 0, "cpu_threads", "must be >= 0 (0: automatic)")
        require(self.precision in ("auto", "bf16", "fp32"), "precision", "must be auto, bf16 or fp32")
        for key in ("log_every", "val_every", "checkpoint_every", "val_batches"):
            require(getattr(self, key) >= 1, key, "must be >= 1")
        require(self.stop_after >= 0, "stop_after", "must be >= 0")
        require(0.0 <= self.cfg_dropout < 1.0, "cfg_dropout", "must be in [0, 1)")
        require(self.time_limit_s >= 0, "time_limit_s", "must be >= 0")
        require(self.timestep_shift > 0, "timestep_shift", "must be > 0")
        require(self.logit_std > 0, "logit_std", "must be > 0")
        require(self.recompute in RECOMPUTE, "recompute", f"must be one of {RECOMPUTE}")
        if str(self.fp8).lower() == "false":  # YAML 1.1 reads a bare `off` (train.fp8=off) as false
            self.fp8 = "off"
        require(self.fp8 in FP8_MODES, "fp8", f"must be one of {FP8_MODES}")
        if self.fp8 != "off":
            choices = ("auto", *FP8_SCALINGS[self.fp8])
            require(self.fp8_scaling in choices, "fp8_scaling", f"must be one of {choices} with fp8={self.fp8}")
        else:  # a scaling asked for without FP8 would silently train in bf16
            require(self.fp8_scaling == "auto", "fp8_scaling", "needs train.fp8=native or te (fp8 is off)")
        if self.fp8 == "te":
            problem = transformer_engine_import_error()
            require(problem is None, "fp8", f"te needs Transformer Engine, which does not import here ({problem}); "
                                            "train.fp8=native runs FP8 on torch._scaled_mm without it")

    def fp8_settings(self) -> Fp8Settings:
        return Fp8Settings(self.fp8, self.fp8_scaling)

    @property
    def planned(self) -> bool:
        """Whether the run's length is planned from its step rate (steps=auto)."""
        return self.steps == "auto"

    @property
    def most_steps(self) -> int:
        """train.steps, or with steps=auto the most the plan may choose: the schedule's length
        until the plan is made."""
        return self.max_steps if self.planned else self.steps


@dataclass
class SampleConfig:
    checkpoint: str = ""  # a checkpoint file or a training output dir (its latest checkpoint)
    prompts: list = field(default_factory=lambda: ["a video clip from Megamind"])
    frames: int = 8
    height: int = 32
    width: int = 56
    steps: int = 30
    guidance: float = 3.0
    negative_prompt: str = ""  # the guidance's negative branch (empty: unconditional)
    solver: str = "euler"  # euler | ab2 | unipc
    shift: float = 1.0  # time-grid shift towards noise (>1 for more tokens, as train.timestep_shift)
    decode_chunk: int = 0  # latent frames decoded at a time (0: all at once)
    cfg_parallel: bool = False  # the two guidance branches on the two halves of a data-parallel size of 2
    fps: float = 12.0
    output: str = ""  # empty: <run.output_dir>/samples
    seed: int | None = None  # None: run.seed; prompt i uses seed + i

    def __post_init__(self) -> None:
        for key in ("frames", "height", "width", "steps"):
            require(getattr(self, key) >= 1, key, "must be >= 1")
        require(self.solver in ("euler", "ab2", "unipc"), "solver", "must be euler, ab2 or unipc")
        require(self.guidance >= 0, "guidance", "must be >= 0")
        require(self.shift > 0, "shift", "must be > 0")
        require(self.decode_chunk >= 0, "decode_chunk", "must be >= 0")
        require(len(self.prompts) >= 1, "prompts", "needs at least one prompt")
