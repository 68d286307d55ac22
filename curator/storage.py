"""Where inputs live: a local directory or any fsspec URL (s3://, gs://, ...), behind one interface."""
from __future__ import annotations

from typing import IO

import fsspec


def _fs(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    return fsspec.core.url_to_fs(uri)


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def exists(uri: str) -> bool:
    fs, path = _fs(uri)
    return fs.exists(path)


def is_dir(uri: str) -> bool:
    fs, path = _fs(uri)
    return fs.isdir(path)


def list_videos(uri: str, extensions: list[str]) -> list[str]:
    """Every file under `uri` (recursively) whose suffix is in `extensions`, sorted, as full URIs."""
    fs, root = _fs(uri)
    paths = [root] if fs.isfile(root) else fs.find(root)
    wanted = tuple(e.lower() for e in extensions)
    found = sorted(p for p in paths if p.lower().endswith(wanted))
    if is_local(uri):
        return found
    return [fs.unstrip_protocol(p) for p in found]


def relative_to_input(uri: str, input_uri: str) -> str:
    """`uri` as a path under the input `input_uri` (a file input: its name), the same wherever the input lives.

    Clip keys hash this, so a checkout or bucket at another path curates to the same keys (and the same
    train/validation split).
    """
    _, path = _fs(uri)
    _, root = _fs(input_uri)
    root = root.rstrip("/")
    if path == root:  # the input is this one file: no request to the filesystem needed to tell
        return path.rsplit("/", 1)[-1]
    if not path.startswith(root + "/"):
        raise ValueError(f"{uri} is not under the input {input_uri}")
    return path[len(root) + 1:]


def size(uri: str) -> int:
    fs, path = _fs(uri)
    return int(fs.size(path))


def open_for_decode(uri: str) -> str | IO[bytes]:
    """A path for local files (decoders read them directly), a seekable file object otherwise."""
    if is_local(uri):
        return uri.removeprefix("file://")
    fs, path = _fs(uri)
    return fs.open(path, "rb")
