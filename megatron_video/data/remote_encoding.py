"""Remote encoding (data.source=remote): Ray actors decode clips and run the VAE and the text encoder;
the trainer receives tensors.

The trainer rank reads its shards as ClipDataset does (same order, split, rank sharding and resume
skipping) but without decoding, groups raw samples into batches and keeps at most
`data.remote_inflight` of them at the workers: the bounded queue that holds the reader back
(backpressure) and bounds the object store. Batches come back in submission order, so a run sees
exactly the batches inline encoding would give. A batch whose worker dies, raises or exceeds
`data.remote_timeout_s` goes to another worker; the failed worker is killed (a slow one is presumed
stuck) and replaced. After `data.remote_retries` further failures the batch is skipped. Each event is
one greppable log line (`remote batch=... worker=... reason=...`), and `stats` counts them. The
clips of a skipped batch, those a worker could not decode and those the reader found unreadable are
counted in the next batch delivered (`SKIPPED`, as every loader does).
"""
from __future__ import annotations

import logging
import os
import pathlib
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from megatron_video.config.run import DataConfig, EncodersConfig
from megatron_video.config.schema import RootConfig
from megatron_video.data.clip_encoder import ClipEncoder
from megatron_video.data.dataset import SKIPPED, ClipDataset

log = logging.getLogger(__name__)


class RawClipDataset(ClipDataset):
    """ClipDataset's samples before decoding: {"sample": the shard's members, "epoch": its epoch}."""

    def _decoded(self, sample: dict, epoch: int) -> dict:
        return {"sample": {name: sample[name] for name in ("__key__", "mp4", "json")}, "epoch": epoch}


class EncodeWorker:
    """The body of one Ray actor: a ClipEncoder on the actor's device."""

    def __init__(self, data: DataConfig, encoders: EncodersConfig, seed: int, captions: dict[str, str],
                 run_dir: str, device: str):
        self.encoder = ClipEncoder(data, encoders, seed, captions, torch.device(device), pathlib.Path(run_dir))

    def pid(self) -> int:
        """The actor's process id (answered once its encoders are loaded: the readiness probe)."""
        return os.getpid()

    def encode(self, samples: list[dict], epochs: list[int]) -> dict | None:
        return self.encoder.encode(samples, epochs)


@dataclass
class RemoteStats:
    batches: int = 0  # delivered to training
    retried: int = 0  # resubmissions after a failure
    timed_out: int = 0  # failures by timeout
    errors: int = 0  # failures by a dead or raising worker
    skipped: int = 0  # batches given up after data.remote_retries retries
    restarts: int = 0  # workers started to replace failed ones


@dataclass
class _Worker:
    handle: Any
    probe: Any  # the ObjectRef of pid(): resolves once the actor is up
    started: float
    ready: bool = False


@dataclass
class _Job:
    index: int
    samples: list[dict]
    epochs: list[int]
    skipped: int  # clips the reader skipped before these
    attempts: int = 0
    worker: _Worker | None = None
    ref: Any = None
    deadline: float = 0.0


def start_ray() -> None:
    """Join RAY_ADDRESS's cluster, or start a local one in this process (as curate does)."""
    import ray

    if not ray.is_initialized():
        # "local" rather than no address: without one, ray.init joins whatever cluster the node last
        # recorded in /tmp/ray/ray_current_cluster, and hangs when that cluster has since died.
        address = os.environ.get("RAY_ADDRESS")
        ray.init(address=address or "local", include_dashboard=False, log_to_driver=False)


class RemoteEncodedLoader:
    """Batches {"latents", "text", "mask", "caption", "key"} encoded by `data.remote_workers` Ray actors."""

    def __init__(self, cfg: RootConfig, split: str, seed: int, repeat: bool, skip_batches: int = 0):
        import ray

        start_ray()
        self.data = cfg.data
        dataset = RawClipDataset(cfg.data, split, seed, repeat, skip_batches)
        self.raw = self._raw_batches(iter(dataset), drop_last=split == "train")
        device = "cuda" if cfg.data.remote_gpus > 0 else "cpu"
        self.actor = ray.remote(EncodeWorker).options(num_cpus=cfg.data.remote_cpus, num_gpus=cfg.data.remote_gpus,
                                                     max_restarts=0)
        self.actor_args = (cfg.data, cfg.encoders, seed, dataset.selection.captions, cfg.run.output_dir, device)
        self.workers = [self._start_worker() for _ in range(cfg.data.remote_workers)]
        self.queue: deque[_Job] = deque()
        self.stats = RemoteStats()
        self.next_index = 0
        self.failed_starts = 0
        self.skipped = 0  # clips skipped since the last batch delivered

    def _raw_batches(self, samples: Iterator[dict], drop_last: bool) -> Iterator[list[dict]]:
        batch: list[dict] = []
        for item in samples:
            batch.append(item)
            if len(batch) == self.data.batch_size:
                yield batch
                batch = []
        if batch and not drop_last:
            yield batch

    # -- workers -----------------------------------------------------------------------------
    def _start_worker(self) -> _Worker:
        handle = self.actor.remote(*self.actor_args)
        return _Worker(handle, handle.pid.remote(), time.monotonic())

    def _replace(self, worker: _Worker, reason: str) -> None:
        import ray

        ray.kill(worker.handle, no_restart=True)
        self.workers[self.workers.index(worker)] = self._start_worker()
        self.stats.restarts += 1
        log.warning("remote worker replaced reason=%s workers=%d", reason, len(self.workers))

    def _update_readiness(self, wait_s: float) -> None:
        """Mark workers whose actor is up; replace those that failed to start or took too long."""
        import ray
        from ray.exceptions import RayError

        starting = [w for w in self.workers if not w.ready]
        if not starting:
            return
        if wait_s:
            ray.wait([w.probe for w in starting], num_returns=1, timeout=wait_s)
        now = time.monotonic()
        for worker in starting:
            if ray.wait([worker.probe], timeout=0)[0]:
                try:
                    ray.get(worker.probe)
                except RayError as err:
                    self.failed_starts += 1
                    if self.failed_starts > self.data.remote_retries + len(self.workers):
                        raise RuntimeError(f"remote encoding workers fail to start: {err}") from err
                    self._replace(worker, f"start_failed:{type(err).__name__}")
                    continue
                worker.ready = True
                self.failed_starts = 0
            elif now - worker.started > self.data.remote_timeout_s:
                self._replace(worker, "start_timeout")

    def _pick_worker(self) -> _Worker:
        """The ready worker with the fewest batches in flight (waits for one to come up)."""
        while True:
            ready = [w for w in self.workers if w.ready]
            if ready:
                return min(ready, key=lambda w: sum(job.worker is w for job in self.queue))
            self._update_readiness(wait_s=1.0)

    # -- jobs --------------------------------------------------------------------------------
    def _submit(self, job: _Job) -> None:
        self._update_readiness(wait_s=0)
        job.worker = self._pick_worker()
        job.ref = job.worker.handle.encode.remote(job.samples, job.epochs)
        job.deadline = time.monotonic() + self.data.remote_timeout_s

    def _fill(self) -> None:
        while len(self.queue) < self.data.remote_inflight:
            raw = next(self.raw, None)
            if raw is None:
                return
            # A batch spanning an epoch boundary keeps each clip's own epoch, as the DataLoader's does.
            job = _Job(self.next_index, [entry["sample"] for entry in raw], [entry["epoch"] for entry in raw],
                       sum(entry[SKIPPED] for entry in raw))
            self.next_index += 1
            self._submit(job)
            self.queue.append(job)

    def _fail(self, job: _Job, reason: str) -> None:
        """Take the batch from its worker, replace the worker, then retry the batch or skip it. The
        worker's other batches go elsewhere too, without counting against them."""
        failed = job.worker
        job.attempts += 1
        log.warning("remote batch=%d worker_failed reason=%s attempt=%d/%d keys=%s", job.index, reason,
                    job.attempts, self.data.remote_retries + 1, [s["__key__"] for s in job.samples])
        self._replace(failed, reason)
        for other in self.queue:
            if other is not job and other.worker is failed:
                self._submit(other)
        if job.attempts > self.data.remote_retries:
            self.queue.remove(job)
            self.stats.skipped += 1
            self.skipped += job.skipped + len(job.samples)
            log.warning("remote batch=%d skipped after %d attempts (skipped=%d)", job.index, job.attempts,
                        self.stats.skipped)
            return
        self.stats.retried += 1
        self._submit(job)

    def __iter__(self) -> RemoteEncodedLoader:
        return self

    def __next__(self) -> dict:
        import ray
        from ray.exceptions import GetTimeoutError, RayError

        while True:
            self._fill()
            if not self.queue:
                raise StopIteration
            job = self.queue[0]
            try:
                result = ray.get(job.ref, timeout=max(job.deadline - time.monotonic(), 0.0))
            except GetTimeoutError:
                self.stats.timed_out += 1
                self._fail(job, "timeout")
                continue
            except RayError as err:
                self.stats.errors += 1
                self._fail(job, type(err).__name__)
                continue
            self.queue.popleft()
            self.skipped += job.skipped + len(job.samples) - (len(result["key"]) if result else 0)
            if result is not None:  # None: no clip of the batch decoded (each was logged by the worker)
                self.stats.batches += 1
                skipped, self.skipped = self.skipped, 0
                return {**result, SKIPPED: skipped}

    def close(self) -> None:
        import ray

        if not ray.is_initialized():
            return
        for worker in self.workers:
            ray.kill(worker.handle, no_restart=True)
        self.workers = []
        log.info("remote encoding closed batches=%d retried=%d timed_out=%d errors=%d skipped=%d restarts=%d",
                 self.stats.batches, self.stats.retried, self.stats.timed_out, self.stats.errors,
                 self.stats.skipped, self.stats.restarts)

    def __del__(self) -> None:
        if getattr(self, "workers", None):
            self.close()
