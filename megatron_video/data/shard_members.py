"""Random access to the files of a WebDataset shard: one clip's mp4 without reading the whole tar."""
from __future__ import annotations

import tarfile
import threading


class ShardMembers:
    """Member offsets, indexed once per shard (one pass over its tar headers), then plain reads."""

    def __init__(self) -> None:
        self._offsets: dict[str, dict[str, tuple[int, int]]] = {}
        self._lock = threading.Lock()

    def _index(self, shard: str) -> dict[str, tuple[int, int]]:
        with self._lock:
            if shard not in self._offsets:
                with tarfile.open(shard) as tar:
                    self._offsets[shard] = {m.name: (m.offset_data, m.size) for m in tar if m.isfile()}
            return self._offsets[shard]

    def read(self, shard: str, name: str) -> bytes:
        """The bytes of member `name` (e.g. "<key>.mp4") of the tar at `shard`; KeyError if absent."""
        offset, size = self._index(shard)[name]
        with open(shard, "rb") as f:
            f.seek(offset)
            return f.read(size)
