"""Shard writer: the pipeline's single sink. It packs clips into WebDataset tars with a Parquet
catalog file per shard, and records every input's outcome in the ledger.

Layout (the trainer reads it): {output}/shards/shard-NNNNNN.tar holding <key>.mp4 and <key>.json,
{output}/catalog/shard-NNNNNN.parquet with one row per clip, the clips' filter scores (ClipTask.extra)
as {output}/catalog/features/filter_scores/shard-NNNNNN.parquet, {output}/ledger.sqlite. The files
are written under temporary names and renamed inside the ledger transaction that records them
(see Ledger.commit_shard); files the ledger does not know are leftovers of a crash and are deleted
when a writer opens the output.
"""
from __future__ import annotations

import io
import json
import logging
import os
import pathlib
import tarfile
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from curator.config import CurateConfig
from curator.ledger import ClipRow, InputRecord, Ledger, final_status
from curator.metrics import RunMetrics
from curator.stages.base import Resources, Stage, WorkerContext
from curator.tasks import ClipTask, Task, VideoMeta

log = logging.getLogger(__name__)

TMP_SUFFIX = ".tmp"
SCORES_FEATURE_SET = "filter_scores"


def clip_metadata(clip: ClipTask, shard: str, fps: float, height: int, width: int) -> dict[str, Any]:
    meta = clip.source_meta
    return {
        "key": clip.key, "shard": shard, "source": clip.source,
        "start_frame": clip.start_frame, "end_frame": clip.end_frame,
        "start_s": round(clip.start_s, 6), "duration_s": round(clip.num_frames / fps, 6),
        "num_frames": clip.num_frames, "fps": fps, "height": height, "width": width,
        "source_fps": clip.source_fps, "source_duration_s": round(clip.duration_s, 6),
        "source_codec": meta.codec, "source_height": meta.height, "source_width": meta.width,
        "crop": clip.crop.as_list(),
    }


@dataclass
class _SourceProgress:
    expected: int
    meta: VideoMeta
    committed: int = 0
    buffered: int = 0
    rejections: list[tuple[str, str]] = field(default_factory=list)
    metrics: RunMetrics = field(default_factory=RunMetrics)

    @property
    def resolved(self) -> int:
        return self.committed + self.buffered + len(self.rejections)


@dataclass
class ShardWriterStage(Stage):
    name = "shard_writer"
    resources = Resources(cpus=0.5)
    output: str = ""  # a local directory
    clips_per_shard: int = 64
    # The clips' size and frame rate, for the catalog rows.
    fps: float = 24.0
    height: int = 352
    width: int = 640
    # What the writer has done so far, for the run's summary and progress.
    ledger: Ledger | None = field(default=None, init=False)
    shard_paths: list[str] = field(default_factory=list, init=False)
    metrics: RunMetrics = field(default_factory=RunMetrics, init=False)
    clips_written: int = field(default=0, init=False)
    inputs_finished: int = field(default=0, init=False)

    @classmethod
    def from_config(cls, cfg: CurateConfig) -> ShardWriterStage:
        return cls(output=cfg.output, clips_per_shard=cfg.clips_per_shard, fps=cfg.fps, height=cfg.height,
                   width=cfg.width)

    def inputs(self) -> list[str]:
        return ["mp4", "key", "status"]

    @property
    def output_dir(self) -> pathlib.Path:
        return pathlib.Path(self.output)

    def setup(self, ctx: WorkerContext) -> None:
        if self.ledger is not None:
            return
        for sub in ("shards", "catalog"):
            (self.output_dir / sub).mkdir(parents=True, exist_ok=True)
        self.ledger = Ledger(str(self.output_dir / "ledger.sqlite"))
        known = set(self.ledger.shard_names())
        self._remove_orphans(known)
        self._next_index = 1 + max((int(n.split("-")[1].split(".")[0]) for n in known), default=-1)
        self.shard_paths = [str(self.output_dir / "shards" / n) for n in sorted(known)]
        self._committed_keys = self.ledger.committed_keys()
        self._previously_committed = self.ledger.committed_clips_by_source()
        self._buffer: list[ClipTask] = []
        self._progress: dict[str, _SourceProgress] = {}

    @property
    def scores_dir(self) -> pathlib.Path:
        """The filter scores, a catalog feature set written one file per shard with the shard."""
        return self.output_dir / "catalog" / "features" / SCORES_FEATURE_SET

    def _remove_orphans(self, known: set[str]) -> None:
        """Delete temporaries and shards/catalog/score files a crash left outside the ledger."""
        stems = {n.removesuffix(".tar") for n in known}
        for folder, suffix in ((self.output_dir / "shards", ".tar"), (self.output_dir / "catalog", ".parquet"),
                               (self.scores_dir, ".parquet")):
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                if path.is_dir():  # catalog/features/ and catalog/versions/ (megatron_video/data/catalog.py)
                    continue
                if path.name.endswith(TMP_SUFFIX) or path.name.removesuffix(suffix) not in stems:
                    log.warning("curate removing-orphan path=%s", path)
                    path.unlink()

    def process(self, task: Task) -> list[Task]:
        self.metrics.add(task.metrics)
        if not isinstance(task, ClipTask):
            # A whole video rejected before it became clips.
            self._record([InputRecord(task.source, task.status, task.reason, getattr(task, "meta", None), 0,
                                      task.metrics)])
            return []
        progress = self._progress.setdefault(task.source, _SourceProgress(
            task.clips_in_source, task.source_meta, committed=self._previously_committed.get(task.source, 0)))
        progress.metrics.add(task.metrics)
        if not task.ok:
            progress.rejections.append((task.status, task.reason))
        elif task.key not in self._committed_keys:
            self._buffer.append(task)
            progress.buffered += 1
        if len(self._buffer) >= self.clips_per_shard:
            self.commit()
        elif progress.resolved == progress.expected and progress.buffered == 0:
            self._record([self._finished_record(task.source)])
        return []

    def _record(self, records: list[InputRecord]) -> None:
        self.ledger.record_inputs(records)
        self.inputs_finished += len(records)

    def _finished_record(self, source: str) -> InputRecord:
        progress = self._progress.pop(source)
        status, reason = final_status(progress.committed + progress.buffered, progress.rejections)
        return InputRecord(source, status, reason, progress.meta, progress.committed + progress.buffered,
                           progress.metrics)

    def commit(self) -> None:
        """Write the buffered clips as one shard and record it; a no-op on an empty buffer."""
        if not self._buffer:
            return
        name = f"shard-{self._next_index:06d}.tar"
        tar_path = self.output_dir / "shards" / name
        parquet_path = self.output_dir / "catalog" / name.replace(".tar", ".parquet")
        rows = [clip_metadata(clip, name, self.fps, self.height, self.width) for clip in self._buffer]
        self._write_tar(tar_path.with_name(name + TMP_SUFFIX), self._buffer, rows)
        pq.write_table(pa.Table.from_pylist(rows), str(parquet_path) + TMP_SUFFIX)
        scores_path = self.scores_dir / name.replace(".tar", ".parquet")
        scores = [{"key": clip.key, **clip.extra} for clip in self._buffer if clip.extra]
        if scores:
            scores_path.parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame(scores).to_parquet(str(scores_path) + TMP_SUFFIX, index=False)
        clips = [ClipRow(c.key, c.source, name, c.start_frame, c.end_frame) for c in self._buffer]
        for clip in self._buffer:
            progress = self._progress[clip.source]
            progress.buffered -= 1
            progress.committed += 1
        finished = [self._finished_record(s) for s, p in list(self._progress.items()) if p.resolved == p.expected]

        def publish() -> None:
            os.replace(str(tar_path) + TMP_SUFFIX, tar_path)
            os.replace(str(parquet_path) + TMP_SUFFIX, parquet_path)
            if scores:
                os.replace(str(scores_path) + TMP_SUFFIX, scores_path)

        self.ledger.commit_shard(name, clips, finished, publish)
        self._committed_keys.update(c.key for c in clips)
        self.clips_written += len(clips)
        self.inputs_finished += len(finished)
        self.shard_paths.append(str(tar_path))
        self._next_index += 1
        self._buffer = []
        log.info("curate shard-committed shard=%s clips=%d inputs_done=%d", name, len(clips), len(finished))

    @staticmethod
    def _write_tar(path: pathlib.Path, clips: list[ClipTask], rows: list[dict[str, Any]]) -> None:
        with open(path, "wb") as f:
            with tarfile.open(fileobj=f, mode="w") as tar:
                for clip, row in zip(clips, rows):
                    for name, payload in ((f"{clip.key}.mp4", clip.mp4),
                                          (f"{clip.key}.json", json.dumps(row).encode())):
                        info = tarfile.TarInfo(name)
                        info.size = len(payload)
                        info.mtime = 0
                        tar.addfile(info, io.BytesIO(payload))
            f.flush()
            os.fsync(f.fileno())

    def teardown(self) -> None:
        """Commit the last partial shard and record inputs still open, then close the ledger."""
        self.commit()
        leftover = [self._finished_record(s) for s in list(self._progress)]
        if leftover:
            self._record(leftover)
        self.ledger.close()
