"""Near-duplicate hashing stage: a clip's perceptual hashes (curator/filters/phash.py). Clips are
compared with each other when the run's verdict is computed (curator/filters/verdict.py), over
every clip the output holds."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from curator.config import CurateConfig
from curator.filters.frames import small_frames
from curator.filters.phash import HASHED_POSITIONS, clip_hashes
from curator.stages.base import Stage, frame_reader_resources
from curator.tasks import ClipTask, Task

HASH_COLUMNS = [f"phash_{i}" for i in range(len(HASHED_POSITIONS))]


@dataclass
class DuplicateHashStage(Stage):
    name = "duplicates"

    def __post_init__(self) -> None:
        self.resources = frame_reader_resources(0.25, self.device)

    @classmethod
    def from_config(cls, cfg: CurateConfig) -> DuplicateHashStage | None:
        return cls(device=cfg.device) if cfg.filters.runs("duplicates") else None

    def inputs(self) -> list[str]:
        return ["frames"]

    def outputs(self) -> list[str]:
        return ["extra"]

    def process(self, task: ClipTask) -> list[Task]:
        rows = np.array([min(task.num_frames - 1, int(p * task.num_frames)) for p in HASHED_POSITIONS])
        hashes = clip_hashes(small_frames(task.frames, 128, rows))
        # Parquet has no unsigned 64-bit type pandas round-trips everywhere: stored as the signed view.
        task.extra.update(zip(HASH_COLUMNS, np.array(hashes, dtype=np.uint64).view(np.int64).tolist()))
        return [task]
