"""What every executor's driver does with a finished or rejected task: hand it to the run's writer,
on the driver's own thread (the writer owns the ledger, whose commits must be serial), and report
the run's progress."""
from __future__ import annotations

from collections.abc import Iterable

from curator.progress import RunProgress
from curator.stages.shard_writer import ShardWriterStage
from curator.tasks import Task


def deliver(tasks: Iterable[Task], writer: ShardWriterStage, progress: RunProgress) -> None:
    for task in tasks:
        writer.process(task)
    progress.update(writer.inputs_finished, writer.clips_written)
