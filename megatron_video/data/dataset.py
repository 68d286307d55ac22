"""Training clips from WebDataset shards: split by data-parallel rank and worker, decoded on CPU.

Curation writes `<key>.mp4` + `<key>.json` per clip; the catalog selects which clips a run reads
(`data.version`, `data.filter`: megatron_video/data/selection.py). Data-parallel ranks read disjoint shards;
tensor- and context-parallel ranks of one replica read the same ones (DESIGN.md), which is why the
split uses megatron's data-parallel rank, not the global rank. A corrupt sample is logged and
skipped, never fatal, and counted: every loader's batch carries `SKIPPED`, the clips its worker
skipped since its previous batch, which the trainer sums into the run's `skipped_clips`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import pathlib
from collections.abc import Iterator

import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from curator.layout import curated_dirs
from megatron_video.config import ConfigError
from megatron_video.config.run import DataConfig
from megatron_video.data.catalog import is_validation_key
from megatron_video.data.decode import decode_window, probe_clip, to_model_video
from megatron_video.data.loader_workers import worker_options
from megatron_video.data.selection import select_clips

log = logging.getLogger(__name__)

# The batch key of the clips a loader's worker skipped (unreadable or undecodable) since its previous
# batch; every loader sets it, so the trainer counts skips the same way whichever loader feeds it.
SKIPPED = "skipped"


def list_shards(root: str | pathlib.Path) -> list[str]:
    """The .tar shards of a curated output dir (its shards/ folder, and each part's of a partitioned
    run) or of a plain dir."""
    root = pathlib.Path(root)
    if not root.is_dir():
        raise ConfigError("data.shards", f"directory '{root}' does not exist")
    shards = [s for d in curated_dirs(root) for s in sorted((d / "shards").glob("*.tar"))] or sorted(root.glob("*.tar"))
    if not shards:
        raise ConfigError("data.shards", f"no .tar shards in '{root}' or '{root}/shards'")
    return [str(s) for s in shards]


def caption_of(meta: dict) -> str:
    """The clip's caption; until captioning runs, the name of the footage it came from."""
    if meta.get("caption"):
        return str(meta["caption"])
    return f"a video clip from {pathlib.Path(str(meta.get('source', 'unknown'))).stem}"


def readable_clip(sample: dict) -> bool:
    """Whether a raw shard sample has its json and an mp4 that passes the demux check
    (decode.probe_clip: opens, has video, holds every packet its header promises); logs why not."""
    if "mp4" not in sample or "json" not in sample:
        log.warning("skipping clip %s: no mp4 and json", sample["__key__"])
        return False
    try:
        probe_clip(sample["mp4"])
    except ValueError as err:
        log.warning("skipping clip %s: %s", sample["__key__"], err)
        return False
    return True


def decode_clip(sample: dict, cfg: DataConfig, seed: int, epoch: int, captions: dict[str, str]) -> dict | None:
    """The training sample of a raw shard sample at `epoch`: its frame window is drawn from a
    generator seeded by (seed, epoch, key), so every loader and encoder cuts the same window.
    None (logged) when the clip does not decode."""
    key = sample["__key__"]
    generator = torch.Generator().manual_seed(
        (seed * 1_000_003 + epoch + int(hashlib.sha1(key.encode()).hexdigest()[:12], 16)) % 2**63)
    try:
        meta = json.loads(sample["json"])
        if key in captions:
            meta["caption"] = captions[key]
        frames = decode_window(sample["mp4"], meta.get("num_frames"), cfg.frames, cfg.frame_stride, generator)
    except (ValueError, OSError, KeyError) as err:  # av.error.* derive from OSError/ValueError
        log.warning("skipping clip %s: %s", key, err)
        return None
    return {"video": to_model_video(frames, cfg.height, cfg.width), "caption": caption_of(meta), "key": key}


def data_parallel_position() -> tuple[int, int]:
    from megatron.core import parallel_state

    if not parallel_state.model_parallel_is_initialized():
        return 0, 1
    return parallel_state.get_data_parallel_rank(), parallel_state.get_data_parallel_world_size()


class ClipDataset(IterableDataset):
    """Yields {"video": float [3, T, H, W] in [-1, 1], "caption": str, "key": str}.

    The order is a pure function of (seed, epoch, worker), and each sample's frame window is drawn
    from its own generator seeded by its key, so a resumed run skips the samples it already used
    (`skip_batches`) without decoding them and then sees exactly what an uninterrupted run would
    (exactly so unless a clip fails mid-stream: unreadable containers are dropped before ordering).
    """

    def __init__(self, cfg: DataConfig, split: str, seed: int, repeat: bool, skip_batches: int = 0):
        self.cfg, self.split, self.seed, self.repeat = cfg, split, seed, repeat
        self.skip_batches = skip_batches
        self.selection = select_clips(cfg)
        self.shards = [s for s in list_shards(cfg.shards) if self.selection.reads_shard(s)]
        # Read here, in the training process: spawned loader workers have no parallel_state.
        self.dp_rank, self.dp_size = data_parallel_position()

    def _shards_for_this_rank(self) -> list[str]:
        rank, size = self.dp_rank, self.dp_size
        if len(self.shards) < size:
            log.warning("%d shards for %d data-parallel ranks: ranks share shards", len(self.shards), size)
            return self.shards
        return self.shards[rank::size]

    def _worker_role(self) -> tuple[int, int]:
        """(role, workers): DataLoader takes batches from workers 0, 1, ... in turn from its start,
        so after `skip_batches` worker w must continue what worker (w + skip) % W was doing."""
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        return (worker + self.skip_batches) % workers, workers

    def _raw_samples(self) -> Iterator[dict | None]:
        """Undecoded samples of this split, this rank and this worker, in shard order; None in the
        place of each unreadable one (so that it is counted where it was met)."""
        role, workers = self._worker_role()
        source = wds.WebDataset(self._shards_for_this_rank(), shardshuffle=False, nodesplitter=None,
                                workersplitter=lambda urls: list(urls)[role::workers],
                                handler=wds.warn_and_continue, empty_check=False)
        for sample in source:
            if not self.selection.includes(sample["__key__"]):
                continue
            if is_validation_key(sample["__key__"], self.cfg.val_fraction) != (self.split == "val"):
                continue
            # Unreadable samples are dropped here, before the order is fixed, so that a resumed
            # run's skipping counts exactly the samples the interrupted run used.
            yield sample if self._readable(sample) else None

    def _readable(self, sample: dict) -> bool:
        return readable_clip(sample)

    def _shuffled(self, epoch: int) -> Iterator[tuple[dict | None, int]]:
        """(sample, unreadable clips read since the previous sample) in this epoch's order; a last
        (None, count) for unreadable clips read after the last sample."""
        buffer: list[dict] = []
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        unreadable = 0
        for sample in self._raw_samples():
            if sample is None:
                unreadable += 1
                continue
            buffer.append(sample)
            if len(buffer) >= self.cfg.shuffle_buffer:
                yield buffer.pop(int(torch.randint(len(buffer), (1,), generator=generator))), unreadable
                unreadable = 0
        while buffer:
            yield buffer.pop(int(torch.randint(len(buffer), (1,), generator=generator))), unreadable
            unreadable = 0
        if unreadable:
            yield None, unreadable

    def _decoded(self, sample: dict, epoch: int) -> dict | None:
        return decode_clip(sample, self.cfg, self.seed, epoch, self.selection.captions)

    def _samples_to_skip(self) -> int:
        # Worker role r made batches r, r+W, r+2W, ... of the first `skip_batches`.
        role, workers = self._worker_role()
        batches = self.skip_batches // workers + (role < self.skip_batches % workers)
        return batches * self.cfg.batch_size

    def __iter__(self) -> Iterator[dict]:
        """Samples, each carrying `SKIPPED`: the clips skipped since the previous one. Skips met
        before a sample a resumed run passes over were counted by the run that used it."""
        skip = self._samples_to_skip()
        epoch, skipped = 0, 0
        while True:
            produced = 0
            for sample, unreadable in self._shuffled(epoch):
                skipped += unreadable
                if sample is None:
                    continue
                produced += 1
                if skip:
                    skip, skipped = skip - 1, 0
                    continue
                decoded = self._decoded(sample, epoch)
                if decoded is None:
                    skipped += 1
                    continue
                yield {**decoded, SKIPPED: skipped}
                skipped = 0
            epoch += 1
            # A worker whose share of shards holds no clip of this split must end, not spin.
            if not self.repeat or produced == 0:
                return


def collate(samples: list[dict]) -> dict:
    """Tensors stacked, the skipped clips summed, everything else (captions, keys) as lists."""
    batch = {name: torch.stack([s[name] for s in samples]) if isinstance(samples[0][name], torch.Tensor)
             else [s[name] for s in samples] for name in samples[0] if name != SKIPPED}
    return {**batch, SKIPPED: sum(s[SKIPPED] for s in samples)}


def build_loader(cfg: DataConfig, split: str, seed: int, repeat: bool, skip_batches: int = 0) -> DataLoader:
    """A DataLoader of batches {"video": [B, 3, T, H, W], "caption": [B], "key": [B], SKIPPED: int}; a resumed
    run passes the number of batches it already consumed as `skip_batches`."""
    dataset = ClipDataset(cfg, split, seed, repeat, skip_batches)
    workers = cfg.num_workers if split == "train" else 0
    return DataLoader(dataset, batch_size=cfg.batch_size, collate_fn=collate, drop_last=split == "train",
                      **worker_options(workers))
