"""`curate(cfg)`: the entry point of `mvideo curate` and of the demo.

Checks the configuration against the world (the input exists) before starting anything, opens the
output (ledger, orphan clean-up), skips inputs the ledger already finished, runs the chosen
executor and returns a CurationSummary.
"""
from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import pathlib
import time
from dataclasses import dataclass, field

from curator import storage
from curator.config import CurateConfig
from curator.filters.verdict import apply_filters
from curator.layout import part_dir, part_share
from curator.ledger import InputRecord, Ledger
from curator.metrics import RunMetrics
from curator.pipeline import build_stages
from curator.progress import RunProgress
from curator.stages.base import Stage, WorkerContext
from curator.stages.shard_writer import ShardWriterStage
from curator.stages.source import SourceStage
from curator.tasks import FAILED, Task
from megatron_video.config.errors import ConfigError
from megatron_video.cpu_cores import available_cores

log = logging.getLogger(__name__)


@dataclass
class CurationSummary:
    inputs_by_status: dict[str, int] = field(default_factory=dict)
    # Inputs failed or skipped, by the kind of reason ("tiny", "low resolution", "crashed", ...).
    not_curated_by_reason: dict[str, int] = field(default_factory=dict)
    clips_written: int = 0
    # Clips of the output the filters reject (curator/filters/verdict.py), by reason; they stay in
    # the shards, and feature set filter_verdict marks them (filter_pass false).
    clips_rejected_by_reason: dict[str, int] = field(default_factory=dict)
    shard_paths: list[str] = field(default_factory=list)
    catalog_path: str = ""
    ledger_path: str = ""
    metrics: RunMetrics = field(default_factory=RunMetrics)
    wall_seconds: float = 0.0
    inputs_skipped_as_finished: int = 0


def check_paths(cfg: CurateConfig) -> None:
    if not cfg.input:
        raise ConfigError("input", "is required (a directory or bucket URL of videos)")
    if not storage.exists(cfg.input):
        raise ConfigError("input", f"{cfg.input!r} does not exist")
    if not cfg.output:
        raise ConfigError("output", "is required (a local directory for shards, catalog and ledger)")
    if not storage.is_local(cfg.output):
        raise ConfigError("output", "must be a local directory (shards are renamed into place atomically)")


def _after_crashes(cfg: CurateConfig, writer: ShardWriterStage, sources: list[str]) -> tuple[list[str], frozenset]:
    """Inputs an earlier run died with in flight: recorded as failed once they were in flight at
    `max_attempts` deaths (so reruns always make progress), else run alone (so a death they cause
    again is theirs, not their neighbours'). Returns the inputs to run and those to run alone."""
    interrupted = {s: n for s, n in writer.ledger.interrupted_starts().items() if s in set(sources)}
    given_up = [s for s, n in interrupted.items() if n >= cfg.max_attempts]
    if given_up:
        writer.ledger.record_inputs([InputRecord(s, FAILED, f"crashed: the curating process died {interrupted[s]} "
                                                 "time(s) with this input in flight (native decoding code?)")
                                     for s in given_up])
        log.warning("curate given-up inputs=%d reason=in flight at %d process deaths", len(given_up),
                    cfg.max_attempts)
    return [s for s in sources if s not in set(given_up)], frozenset(interrupted) - set(given_up)


def curate(cfg: CurateConfig, progress: bool = True, stages: list[Stage] | None = None) -> CurationSummary:
    """Curate every video under cfg.input into WebDataset shards under cfg.output. `stages` replaces
    `build_stages(cfg)` (the pipeline benchmark's ablations swap one stage out)."""
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        # A script without a main guard, imported again by multiprocessing to start the encoder
        # processes (the flag multiprocessing itself checks before starting processes): curating
        # here would open the same output beside the run that started them.
        raise RuntimeError("curate() was called while multiprocessing imported the main script for a "
                           "worker process: call it under `if __name__ == '__main__':`")
    check_paths(cfg)
    start = time.perf_counter()
    if cfg.part_count > 1:  # this process's part writes an output of its own
        cfg = dataclasses.replace(cfg, output=str(part_dir(cfg.output, cfg.part_index, cfg.part_count)))
    writer = ShardWriterStage.from_config(cfg)
    writer.setup(WorkerContext(available_cores(), concurrent_tasks=1))  # the calling thread alone
    finished = writer.ledger.finished_sources(cfg.retry_failed)
    listed = part_share([task.source for task in SourceStage.from_config(cfg).process(Task(source=cfg.input))],
                        cfg.part_index, cfg.part_count)
    sources = [s for s in listed if s not in finished]
    sources, alone = _after_crashes(cfg, writer, sources)
    log.info("curate start input=%s output=%s part=%d/%d inputs=%d already_finished=%d executor=%s", cfg.input,
             cfg.output, cfg.part_index, cfg.part_count, len(listed), len(listed) - len(sources), cfg.executor)
    bar = RunProgress(len(sources), cfg.log_every_s, show_bar=progress)
    stages = build_stages(cfg) if stages is None else stages
    try:
        if cfg.executor == "local":
            from curator.executors.local import run_local

            run_local(cfg, sources, stages, writer, bar, alone)
        elif cfg.executor == "ray":
            from curator.executors.ray_runner import run_ray

            run_ray(cfg, sources, stages, writer, bar)
        else:
            from curator.executors.nemo import run_nemo

            run_nemo(cfg, sources, stages, writer, bar)
    finally:
        writer.teardown()
        bar.update(writer.inputs_finished, writer.clips_written)
        bar.close()
    verdict_start, verdict_cpu = time.perf_counter(), time.thread_time()
    rejected = apply_filters(cfg.output, cfg.filters)  # every clip of the output, with today's thresholds
    writer.metrics.add_stage("filter_verdict", time.perf_counter() - verdict_start, time.thread_time() - verdict_cpu)
    ledger_path = str(pathlib.Path(cfg.output) / "ledger.sqlite")
    ledger = Ledger(ledger_path)
    counts, reasons = ledger.status_counts(), ledger.reason_counts()
    ledger.close()
    summary = CurationSummary(
        inputs_by_status=counts, not_curated_by_reason=reasons, clips_written=writer.clips_written,
        clips_rejected_by_reason=rejected,
        shard_paths=writer.shard_paths,
        catalog_path=str(pathlib.Path(cfg.output) / "catalog"), ledger_path=ledger_path,
        metrics=writer.metrics,
        wall_seconds=round(time.perf_counter() - start, 3), inputs_skipped_as_finished=len(listed) - len(sources))
    log.info("curate done inputs=%s not_curated=%s clips=%d filtered=%s shards=%d wall_s=%.1f stage_s=%s", counts,
             reasons, summary.clips_written, rejected, len(summary.shard_paths), summary.wall_seconds,
             summary.metrics.seconds())
    return summary
