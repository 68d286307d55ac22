"""The whole configuration: one typed section per area, so an unknown or mistyped key fails early."""
from __future__ import annotations

from dataclasses import dataclass, field

from curator.balance.config import BalanceConfig
from curator.captions.config import CaptionConfig
from curator.config import CurateConfig
from curator.dedup.config import DedupConfig
from megatron_video.config.run import DataConfig, EncodersConfig, RunConfig, SampleConfig, TrainConfig
from megatron_video.data.encode_config import EncodeConfig
from megatron_video.inference.eval_config import EvalConfig
from megatron_video.inference.server.config import ServeConfig
from megatron_video.model.config import VideoDiTConfig
from megatron_video.optim.config import OptimConfig
from megatron_video.optim.coord_check import CoordCheckConfig
from megatron_video.optim.ema import EmaConfig
from megatron_video.optim.hpo import HpoConfig
from megatron_video.parallel.state import ParallelConfig
from megatron_video.plan.config import PlanConfig
from megatron_video.training.long_run_config import CheckpointConfig, FaultConfig
from megatron_video.viewer.config import CatalogConfig, PreviewConfig, ViewConfig


@dataclass
class RootConfig:
    run: RunConfig = field(default_factory=RunConfig)
    curate: CurateConfig = field(default_factory=CurateConfig)
    caption: CaptionConfig = field(default_factory=CaptionConfig)
    balance: BalanceConfig = field(default_factory=BalanceConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    data: DataConfig = field(default_factory=DataConfig)
    encoders: EncodersConfig = field(default_factory=EncodersConfig)
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    model: VideoDiTConfig = field(default_factory=VideoDiTConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    faults: FaultConfig = field(default_factory=FaultConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    ema: EmaConfig = field(default_factory=EmaConfig)
    hpo: HpoConfig = field(default_factory=HpoConfig)
    coord_check: CoordCheckConfig = field(default_factory=CoordCheckConfig)
    catalog: CatalogConfig = field(default_factory=CatalogConfig)
    view: ViewConfig = field(default_factory=ViewConfig)
    preview: PreviewConfig = field(default_factory=PreviewConfig)
    plan: PlanConfig = field(default_factory=PlanConfig)
