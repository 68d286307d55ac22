"""The clips one data-parallel rank reads, checked before training and written as DALI index files.

DALI's `fn.readers.webdataset` reads what its index files list, so the index is where the run's
selection happens: only clips the catalog selects (`data.version`, `data.filter`), of this split,
on this rank, and readable. A DALI pipeline cannot skip a sample: one unreadable mp4 kills it
(`Failed to create video decoder`), and a truncated clip whose header survived decodes to padding
without a word. So every clip this rank will read is demuxed once here, without decoding: the
container must open, hold a video stream and deliver every packet its header promises. Clips that
fail are left out of the index, logged and counted.

Ranks split the selected clips into contiguous, nearly equal runs (DALI's own `shard_id` split,
done here so that each rank checks only the clips it reads); tensor-, context- and pipeline-
parallel ranks of one replica pass the same data-parallel rank and get the same clips.
"""
from __future__ import annotations

import logging
import pathlib
import tarfile
from dataclasses import dataclass, field

from megatron_video.data.catalog import is_validation_key
from megatron_video.data.decode import probe_clip
from megatron_video.data.selection import ClipSelection

log = logging.getLogger(__name__)

COMPONENTS = ("mp4", "json")  # what the reader yields per clip, in this order


@dataclass(frozen=True)
class Member:
    offset: int
    size: int
    name: str


@dataclass(frozen=True)
class Clip:
    shard: str
    key: str
    members: tuple[Member, ...]  # one per COMPONENTS entry


@dataclass
class ClipIndex:
    """This rank's readable clips, by shard; what was left out and why is counted."""

    clips: list[Clip] = field(default_factory=list)
    num_frames: dict[str, int] = field(default_factory=dict)  # by key, as demuxed
    codecs: set[str] = field(default_factory=set)
    unreadable: list[str] = field(default_factory=list)  # keys that failed the check

    def write(self, folder: pathlib.Path) -> tuple[list[str], list[str]]:
        """(shard paths, index paths) in DALI's index format v1.2, one index per shard read."""
        by_shard: dict[str, list[Clip]] = {}
        for clip in self.clips:
            by_shard.setdefault(clip.shard, []).append(clip)
        folder.mkdir(parents=True, exist_ok=True)
        indexes = []
        for number, (shard, clips) in enumerate(by_shard.items()):
            path = folder / f"{number:06d}.idx"
            lines = [" ".join(f"{ext} {m.offset} {m.size} {m.name}" for ext, m in zip(COMPONENTS, c.members))
                     for c in clips]
            path.write_text(f"v1.2 {len(clips)}\n" + "\n".join(lines) + "\n")
            indexes.append(str(path))
        return list(by_shard), indexes


def split_member(name: str) -> tuple[str, str]:
    """(key, extension) of a tar member by WebDataset's rule: the key is the path up to the first
    dot of the file name; ("", "") for hidden or extension-less files."""
    start = name.rfind("/") + 1
    dot = name.find(".", start)
    return (name[:dot], name[dot + 1:]) if dot > start else ("", "")


def shard_clips(shard: str) -> list[Clip]:
    """The clips of one tar that have every component, in tar order (one pass over its headers)."""
    members: dict[str, dict[str, Member]] = {}
    with tarfile.open(shard) as tar:
        for info in tar:
            key, ext = split_member(info.name)
            if info.isfile() and key:
                members.setdefault(key, {})[ext] = Member(info.offset_data, info.size, info.name)
    return [Clip(shard, key, tuple(parts[ext] for ext in COMPONENTS))
            for key, parts in members.items() if all(ext in parts for ext in COMPONENTS)]


def rank_slice(count: int, rank: int, ranks: int) -> slice:
    return slice(rank * count // ranks, (rank + 1) * count // ranks)


def build_clip_index(shards: list[str], selection: ClipSelection, val_fraction: float, split: str,
                     rank: int, ranks: int) -> ClipIndex:
    """Select, split among ranks, then check this rank's clips (see the module docstring)."""
    wanted = [clip for shard in shards for clip in shard_clips(shard)
              if selection.includes(clip.key) and is_validation_key(clip.key, val_fraction) == (split == "val")]
    index = ClipIndex()
    for clip in wanted[rank_slice(len(wanted), rank, ranks)]:
        mp4 = clip.members[0]
        with open(clip.shard, "rb") as f:
            f.seek(mp4.offset)
            data = f.read(mp4.size)
        try:
            frames, codec = probe_clip(data)
        except ValueError as err:
            log.warning("skipping clip %s of %s: %s", clip.key, clip.shard, err)
            index.unreadable.append(clip.key)
            continue
        index.clips.append(clip)
        index.num_frames[clip.key] = frames
        index.codecs.add(codec)
    return index
