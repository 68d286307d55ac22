"""RunMetrics: the seconds a curation spent, per stage and in the encoder processes, as one typed record.

Every task carries one (a stage adds its own time to it), the shard writer sums them per input for
the ledger and over the run for the summary, and the benchmark reads the summary's. A stage's wall
seconds far above its CPU seconds is time spent waiting for the GPU, the GIL or another process.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field


@dataclass
class StageTime:
    wall: float = 0.0  # seconds inside the stage's process() call
    cpu: float = 0.0  # CPU seconds of the thread that ran it


@dataclass
class RunMetrics:
    stages: dict[str, StageTime] = field(default_factory=dict)
    # CPU seconds of the encoder processes (they are not any thread's of the worker, so no stage's `cpu`).
    encoder_process_cpu: float = 0.0

    def add_stage(self, name: str, wall: float, cpu: float) -> None:
        time = self.stages.setdefault(name, StageTime())
        time.wall += wall
        time.cpu += cpu

    def add(self, other: RunMetrics) -> None:
        for name, time in other.stages.items():
            self.add_stage(name, time.wall, time.cpu)
        self.encoder_process_cpu += other.encoder_process_cpu

    def wall(self, stage: str) -> float:
        return self.stages[stage].wall if stage in self.stages else 0.0

    def seconds(self, digits: int = 3) -> dict[str, float]:
        """Flat `{stage: wall, stage_cpu: cpu, encode_process_cpu: ...}`, rounded: the ledger's
        `timings` column and the benchmark results' `stage_seconds` (their format predates this record)."""
        flat = {}
        for name, time in self.stages.items():
            flat[name] = round(time.wall, digits)
            flat[f"{name}_cpu"] = round(time.cpu, digits)
        if self.encoder_process_cpu:
            flat["encode_process_cpu"] = round(self.encoder_process_cpu, digits)
        return flat

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, fields: dict) -> RunMetrics:
        """The record `as_dict` gave (e.g. sent as JSON by another process)."""
        return cls({name: StageTime(**time) for name, time in fields["stages"].items()}, fields["encoder_process_cpu"])

    def to_json(self) -> str:
        return json.dumps(self.seconds(digits=4))
