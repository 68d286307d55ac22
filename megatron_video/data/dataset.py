"""Training clips from WebDataset shards: split by data-parallel rank and worker, decoded on CPU.

Curation writes `<key>.mp4` + `<key>.json` per clip. Data-parallel ranks read disjoint shards;
tensor- and context-parallel ranks of one replica read the same ones (DESIGN.md), which is why the
split uses megatron's data-parallel rank, not the global rank. A corrupt sample is logged and
skipped (`warn_and_continue`), never fatal.
"""
from __future__ import annotations

import json
import logging
import pathlib
from typing import Iterator

import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset

from megatron_video.config import ConfigError
from megatron_video.config.run import DataConfig
from megatron_video.data.catalog import is_validation_key
from megatron_video.data.decode import decode_frames, to_model_video, window

log = logging.getLogger(__name__)


def list_shards(root: str | pathlib.Path) -> list[str]:
    """The .tar shards of a curated output dir (its shards/ folder) or of a plain dir."""
    root = pathlib.Path(root)
    if not root.is_dir():
        raise ConfigError("data.shards", f"directory '{root}' does not exist")
    shards = sorted((root / "shards").glob("*.tar")) or sorted(root.glob("*.tar"))
    if not shards:
        raise ConfigError("data.shards", f"no .tar shards in '{root}' or '{root}/shards'")
    return [str(s) for s in shards]


def caption_of(meta: dict) -> str:
    """The clip's caption; until captioning runs, the name of the footage it came from."""
    if meta.get("caption"):
        return str(meta["caption"])
    return f"a video clip from {pathlib.Path(str(meta.get('source', 'unknown'))).stem}"


def _data_parallel_position() -> tuple[int, int]:
    from megatron.core import parallel_state

    if not parallel_state.model_parallel_is_initialized():
        return 0, 1
    return parallel_state.get_data_parallel_rank(), parallel_state.get_data_parallel_world_size()


class ClipDataset(IterableDataset):
    """Yields {"video": float [3, T, H, W] in [-1, 1], "caption": str, "key": str}."""

    def __init__(self, cfg: DataConfig, split: str, seed: int, repeat: bool):
        self.cfg, self.split, self.seed, self.repeat = cfg, split, seed, repeat
        self.shards = list_shards(cfg.shards)
        self.epoch = 0

    def _shards_for_this_rank(self) -> list[str]:
        rank, size = _data_parallel_position()
        shards = self.shards[rank::size] if len(self.shards) >= size else self.shards
        if len(shards) < len(self.shards) // max(size, 1):
            log.warning("fewer shards than data-parallel ranks: ranks will share shards")
        return shards

    def _samples(self, epoch: int) -> Iterator[dict]:
        source = wds.WebDataset(self._shards_for_this_rank(), shardshuffle=False,
                                nodesplitter=None, workersplitter=wds.split_by_worker,
                                handler=wds.warn_and_continue, empty_check=False)
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        for sample in source:
            meta = json.loads(sample["json"])
            key = sample["__key__"]
            if is_validation_key(key, self.cfg.val_fraction) != (self.split == "val"):
                continue
            try:
                frames = window(decode_frames(sample["mp4"]), self.cfg.frames, self.cfg.frame_stride,
                                generator)
            except (ValueError, OSError) as err:  # av.error.* derive from OSError/ValueError
                log.warning("skipping clip %s: %s", key, err)
                continue
            yield {"video": to_model_video(frames, self.cfg.height, self.cfg.width),
                   "caption": caption_of(meta), "key": key}

    def __iter__(self) -> Iterator[dict]:
        while True:
            buffer: list[dict] = []
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            produced = 0
            for sample in self._samples(self.epoch):
                produced += 1
                buffer.append(sample)
                if len(buffer) >= self.cfg.shuffle_buffer:
                    yield buffer.pop(int(torch.randint(len(buffer), (1,), generator=generator)))
            while buffer:
                yield buffer.pop(int(torch.randint(len(buffer), (1,), generator=generator)))
            self.epoch += 1
            # A worker whose share of shards holds no clip of this split must end, not spin.
            if not self.repeat or produced == 0:
                return


def _collate(samples: list[dict]) -> dict:
    return {"video": torch.stack([s["video"] for s in samples]),
            "caption": [s["caption"] for s in samples], "key": [s["key"] for s in samples]}


def build_loader(cfg: DataConfig, split: str, seed: int, repeat: bool) -> DataLoader:
    """A DataLoader of batches {"video": [B, 3, T, H, W], "caption": [B], "key": [B]}."""
    dataset = ClipDataset(cfg, split, seed, repeat)
    workers = cfg.num_workers if split == "train" else 0
    return DataLoader(dataset, batch_size=cfg.batch_size, collate_fn=_collate, num_workers=workers,
                      persistent_workers=workers > 0, drop_last=split == "train")
