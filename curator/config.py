"""CurateConfig: every knob of `mvideo curate`, validated before any worker starts.

Fields use only simple types so the top-level loader can nest this dataclass under the `curate`
section of an OmegaConf structured config; recipes in recipes/curate/ are plain mappings of it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from curator.filters.config import FilterConfig
from curator.video.nvdec_support import MAX_SIZE as NVDEC_MAX_SIZE
from megatron_video.config.errors import ConfigError, require

EXECUTORS = ("local", "ray", "nemo")
DEVICES = ("auto", "cpu", "cuda")
NEMO_BACKENDS = ("ray_actor_pool", "xenna", "ray_data")
ENCODER_PRIORITIES = ("idle", "nice", "normal")


@dataclass
class CurateConfig:
    input: str = ""
    output: str = ""
    # Output clips: resolution, frame rate and length rules.
    height: int = 352
    width: int = 640
    fps: float = 24.0
    min_seconds: float = 3.0
    max_seconds: float = 30.0
    min_frames: int = 81
    # 0 = every clip; else only each video's first this many clips, so that one long video cut into many
    # shots does not make up most of a small dataset (the CPU demo's captions name their source video)
    max_clips_per_source: int = 0
    # Execution: "local" (threads and encoder processes in this process), "ray" (one actor per GPU
    # of a Ray cluster, each running the local executor) or "nemo" (NeMo Curator's executors).
    executor: str = "local"
    nemo_backend: str = "ray_actor_pool"
    # Threads of the local executor (a Ray actor's: its CPUs). With NeMo Curator, the workers a
    # node's cores are shared among, each sizing its library threads from its share.
    workers: int = 2
    # Inputs open at once (their frames are in memory), over the whole run.
    max_in_flight: int = 8
    # One part of the inputs, for one independent process per GPU (e.g. one SLURM task each:
    # part_index=$SLURM_PROCID part_count=$SLURM_NTASKS): part i takes every part_count-th input of
    # the sorted listing from the i-th on and writes a complete output of its own (shards, catalog,
    # ledger, resumable alone) under output/part-<i>-of-<n>; the loaders read every part's shards.
    part_index: int = 0
    part_count: int = 1
    device: str = "auto"
    clips_per_shard: int = 64
    log_every_s: float = 10.0
    extensions: list[str] = field(default_factory=lambda: [
        ".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".flv"])
    # Inputs the probe rejects (recorded in the ledger with the reason).
    min_input_side: int = 64
    # Inputs smaller than the output box by more than this factor are skipped: a 160x90 video
    # would be upscaled 4x to 352x640 (blur, not data).
    max_upscale: float = 2.0
    allowed_codecs: list[str] = field(default_factory=list)
    # Variable-frame-rate inputs (most phone and web video) are re-timed to `fps` by their frame
    # timestamps (curator/video/retime.py); true rejects them instead. An input is variable when
    # over 5% of its frame intervals stray from their median by more than `vfr_tolerance` of it.
    reject_variable_frame_rate: bool = False
    vfr_tolerance: float = 0.25
    # Decode: frames travel in chunks; shot detection and crop analysis work on small copies.
    decode_chunk_frames: int = 64
    # NVDEC decodes at once per GPU on the GPU path: the local executor (also inside each Ray
    # actor) runs at most this many video jobs (probe, decode, shots) at once. Beyond what the
    # GPU's decode engines (7 on H100/H200) keep busy, more sessions only slow each other down
    # (benchmarks/notes.md, "NVDEC sessions"), and every extra thread contends for the GIL.
    nvdec_sessions: int = 8
    # Codecs the NVDEC path takes (curator/video/nvdec_support.py has the other conditions); every
    # other input, and one whose NVDEC decode fails, decodes on the CPU.
    nvdec_codecs: list[str] = field(default_factory=lambda: ["h264", "hevc", "vp9"])
    # `mvideo curate` runs the curation in a child process and starts it again if it dies (a crash
    # in native decoding code); an input in flight at this many deaths is recorded as failed.
    max_attempts: int = 2
    analysis_width: int = 160
    # Frames are kept from that one decode (at the clip output's scale) for the clips, so no clip
    # range is decoded again; a video whose kept frames would exceed this falls back to re-decoding.
    retain_frames_max_mb: int = 2048
    # Shot detection: PySceneDetect ContentDetector first, TransNetV2 on candidate segments.
    content_threshold: float = 27.0
    min_shot_frames: int = 8
    second_pass: bool = True
    second_pass_long_shot_seconds: float = 10.0
    second_pass_low_confidence: float = 0.5
    transnet_threshold: float = 0.5
    # Crop: black bars (luma below this on every frame) and burned-in text lines (read by OCR on
    # `filters.ocr_frames` frames) within `text_band_fraction` of the top or bottom edge.
    black_level: int = 24
    text_band_fraction: float = 0.25
    max_crop_fraction: float = 0.4
    # Encode.
    crf: int = 23
    # libx264's speed/size trade-off. Faster presets than "veryfast" save encoder CPU but drop the
    # rc-lookahead (so the macroblock tree), which costs far more bytes at the same crf, or quality
    # at the same bytes (benchmarks/notes.md, "x264 preset").
    preset: str = "veryfast"
    encode_threads: int = 0  # 0: the process's cores (its CPU affinity) shared among the clips encoded at once
    # libx264 encodes in a process pool: -1 = one process per thread that encodes where threads share
    # one GIL, which PyAV holds through most of each frame (the local executor's `workers`),
    # 0 = in the worker itself.
    encode_processes: int = -1
    # The encoder processes' CPU priority against the curating process, whose threads (GIL hand-offs,
    # NVDEC calls) set the run's pace: "idle" (Linux SCHED_IDLE: they run on cores nothing else
    # wants and give a core up the moment a curating thread wakes; niceness +10 where the OS has no
    # SCHED_IDLE or refuses it), "nice" (niceness +10), "normal" (the curating process's priority).
    # On a node shared with other busy jobs, "idle" encoders get only the cores those leave idle.
    encoder_priority: str = "idle"
    retry_failed: bool = False
    # Clip filters (curator/filters): scores in the catalog, thresholds applied from them.
    filters: FilterConfig = field(default_factory=FilterConfig)

    def __post_init__(self) -> None:
        if isinstance(self.filters, dict):  # built from a plain mapping (a recipe read as YAML)
            try:
                self.filters = FilterConfig(**self.filters)
            except TypeError as err:
                raise ConfigError("filters", str(err)) from None
        require(self.height > 0 and self.height % 2 == 0, "height", "must be a positive even number")
        require(self.width > 0 and self.width % 2 == 0, "width", "must be a positive even number")
        require(self.fps > 0, "fps", "must be > 0")
        require(self.min_seconds > 0, "min_seconds", "must be > 0")
        require(self.max_seconds >= self.min_seconds, "max_seconds", "must be >= min_seconds")
        require(self.min_frames >= 1, "min_frames", "must be >= 1")
        require(self.max_clips_per_source >= 0, "max_clips_per_source", "must be >= 0")
        require(self.min_frames <= self.max_seconds * self.fps, "min_frames",
                "must fit in max_seconds at fps")
        require(self.executor in EXECUTORS, "executor", f"must be one of {EXECUTORS}")
        require(self.nemo_backend in NEMO_BACKENDS, "nemo_backend", f"must be one of {NEMO_BACKENDS}")
        require(self.workers >= 1, "workers", "must be >= 1")
        require(self.max_in_flight >= 1, "max_in_flight", "must be >= 1")
        require(self.part_count >= 1, "part_count", "must be >= 1")
        require(0 <= self.part_index < self.part_count, "part_index", f"must be in [0, part_count={self.part_count})")
        require(self.device in DEVICES, "device", f"must be one of {DEVICES}")
        require(self.clips_per_shard >= 1, "clips_per_shard", "must be >= 1")
        require(self.log_every_s > 0, "log_every_s", "must be > 0")
        require(all(e.startswith(".") for e in self.extensions), "extensions", "each must start with '.'")
        require(self.min_input_side >= 1, "min_input_side", "must be >= 1")
        require(self.max_upscale >= 1, "max_upscale", "must be >= 1")
        require(set(self.nvdec_codecs) <= set(NVDEC_MAX_SIZE), "nvdec_codecs",
                f"each must be one of {sorted(NVDEC_MAX_SIZE)}")
        require(self.max_attempts >= 1, "max_attempts", "must be >= 1")
        require(0 < self.vfr_tolerance < 1, "vfr_tolerance", "must be in (0, 1)")
        require(self.decode_chunk_frames >= 1, "decode_chunk_frames", "must be >= 1")
        require(self.nvdec_sessions >= 1, "nvdec_sessions", "must be >= 1")
        require(self.retain_frames_max_mb >= 0, "retain_frames_max_mb", "must be >= 0")
        require(self.analysis_width >= 48, "analysis_width", "must be >= 48")
        require(self.content_threshold > 0, "content_threshold", "must be > 0")
        require(self.min_shot_frames >= 1, "min_shot_frames", "must be >= 1")
        require(self.second_pass_long_shot_seconds > 0, "second_pass_long_shot_seconds", "must be > 0")
        require(0 < self.second_pass_low_confidence < 1, "second_pass_low_confidence", "must be in (0, 1)")
        require(0 < self.transnet_threshold < 1, "transnet_threshold", "must be in (0, 1)")
        require(0 <= self.black_level < 255, "black_level", "must be in [0, 255)")
        require(0 < self.text_band_fraction <= 0.5, "text_band_fraction", "must be in (0, 0.5]")
        require(0 < self.max_crop_fraction < 1, "max_crop_fraction", "must be in (0, 1)")
        require(0 <= self.crf <= 51, "crf", "must be in [0, 51]")
        require(self.encode_threads >= 0, "encode_threads", "must be >= 0")
        require(self.encode_processes >= -1, "encode_processes", "must be >= -1 (-1: automatic)")
        require(self.encoder_priority in ENCODER_PRIORITIES, "encoder_priority", f"must be one of {ENCODER_PRIORITIES}")

    @property
    def min_clip_seconds(self) -> float:
        """The shortest source span that yields a valid clip: both length rules at once."""
        return max(self.min_seconds, self.min_frames / self.fps)
