"""Latent shards: WebDataset shards of VAE latents and text-encoder states, written once by
`mvideo encode` (megatron_video/data/latent_encoding.py) and read by the trainer (data.source=latents).

Layout, in the manner of NeMo DFM's latent datasets (a tensor file, the text embeddings and a json of
metadata per sample; here every tensor is a `torch.save` file, loaded with weights_only, where DFM
pickles its text embeddings):

    latents.json                 the manifest: format, the settings that shaped the tensors, the source
    empty_prompt.pth             the empty prompt's text states ({"states": [L, D], "mask": [L]}): text
                                 dropout's, so a run on latents loads no text encoder
    shards/<name>.tar            one per input shard, <key>.pth (latents [C, T', H', W']),
                                 <key>.text.pth ({"states": [tokens, D] of the real tokens, "mask": [L]}),
                                 <key>.json ({key, caption, source_shard, latent_shape, text_tokens})
    shards/<name>.json           the shard's record: its input shard, the keys written, the keys that failed

A shard's .tar is renamed into place after its record: present means complete, so a killed encode
run resumes at the first shard without one. The trainer refuses latents whose manifest disagrees with
its configuration, naming the key (`encoders.max_text_len`, `data.height`, ...).
"""
from __future__ import annotations

import io
import json
import logging
import os
import pathlib
from dataclasses import replace

import torch
from torch.utils.data import DataLoader

from megatron_video.config import ConfigError
from megatron_video.config.run import DataConfig
from megatron_video.config.schema import RootConfig
from megatron_video.data.dataset import ClipDataset, collate, data_parallel_position
from megatron_video.data.loader_workers import worker_options
from megatron_video.data.selection import ClipSelection, select_clips

log = logging.getLogger(__name__)

FORMAT = "megatron-video-latents/1"
MANIFEST = "latents.json"
EMPTY_PROMPT = "empty_prompt.pth"
LATENT, TEXT, META = "pth", "text.pth", "json"


def encoding_settings(cfg: RootConfig) -> dict[str, object]:
    """The configuration keys whose values shape the stored tensors, by the key a user would set."""
    enc, data = cfg.encoders, cfg.data
    settings: dict[str, object] = {"encoders.codec": enc.codec}
    if enc.codec == "wan":
        settings["encoders.codec_path"] = str(pathlib.Path(enc.codec_path).resolve())
    else:
        settings["encoders.pixel_factor"] = enc.pixel_factor
    settings["encoders.text"] = enc.text
    if enc.text == "t5":
        settings["encoders.text_path"] = str(pathlib.Path(enc.text_path).resolve())
    settings["encoders.max_text_len"] = enc.max_text_len
    for key in ("frames", "frame_stride", "height", "width"):
        settings[f"data.{key}"] = getattr(data, key)
    return settings


def settings_conflict(recorded: dict, cfg: RootConfig) -> tuple[str, object, object] | None:
    """(key, configured value, recorded value) of the first setting that differs, else None."""
    for key, value in encoding_settings(cfg).items():
        if recorded.get(key) != value:
            return key, value, recorded.get(key)
    return None


def read_manifest(root: str | pathlib.Path, key: str) -> dict:
    path = pathlib.Path(root) / MANIFEST
    if not path.is_file():
        raise ConfigError(key, f"'{root}' holds no {MANIFEST}: not a directory written by `mvideo encode`")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise ConfigError(key, f"'{path}' is format {manifest.get('format')!r}, this version reads {FORMAT!r}")
    return manifest


def write_json(path: pathlib.Path, value: dict) -> None:
    """Write under a temporary name, then rename: a reader never sees half a file."""
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    temporary.write_text(json.dumps(value, indent=2) + "\n")
    os.replace(temporary, path)


def _tensor_bytes(value) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def _load(data: bytes):
    return torch.load(io.BytesIO(data), weights_only=True)


def sample_members(key: str, latents: torch.Tensor, text: torch.Tensor, mask: torch.Tensor, caption: str,
                   source_shard: str, dtype: torch.dtype) -> dict:
    """The tar members of one encoded clip (unbatched tensors); text padding is not stored."""
    meta = {"key": key, "caption": caption, "source_shard": source_shard, "latent_shape": list(latents.shape),
            "text_tokens": int(mask.sum())}
    return {"__key__": key, LATENT: _tensor_bytes(latents.to(dtype).clone()),
            TEXT: _tensor_bytes({"states": text[mask].to(dtype).clone(), "mask": mask.clone()}),
            META: json.dumps(meta).encode()}


def write_empty_prompt(root: pathlib.Path, text_encoder) -> None:
    """Store the empty prompt's states (under a temporary name, then renamed)."""
    states, mask = text_encoder.encode([""])
    temporary = root / f".{EMPTY_PROMPT}.tmp{os.getpid()}"
    temporary.write_bytes(_tensor_bytes({"states": states[0].clone(), "mask": mask[0].clone()}))
    os.replace(temporary, root / EMPTY_PROMPT)


class StoredEmptyPrompt:
    """The text encoder of a run on latents (a TextEncoder): the only prompt the trainer encodes is
    text dropout's empty one, and `mvideo encode` stored its states beside the latents."""

    def __init__(self, root: str | pathlib.Path):
        stored = _load((pathlib.Path(root) / EMPTY_PROMPT).read_bytes())
        self.states, self.mask = stored["states"].float(), stored["mask"]
        self.dim = self.states.shape[-1]
        self.identity = f"stored empty prompt of {root}"

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if any(prompts):
            raise ValueError("a run on latent shards encodes no prompt but the empty one (text dropout)")
        return self.states.expand(len(prompts), -1, -1), self.mask.expand(len(prompts), -1)


def read_sample(sample: dict) -> dict:
    """A latent-shard sample as the trainer's tensors (float32, text padded back to [L, D])."""
    meta = json.loads(sample[META])
    stored = _load(sample[TEXT])
    mask = stored["mask"]
    text = torch.zeros(mask.shape[0], stored["states"].shape[-1])
    text[mask] = stored["states"].float()
    return {"latents": _load(sample[LATENT]).float(), "text": text, "mask": mask, "caption": meta["caption"],
            "key": meta["key"]}


class LatentStore:
    """A latent directory: its manifest and the records of its finished shards."""

    def __init__(self, root: str | pathlib.Path, key: str = "data.latents"):
        self.root = pathlib.Path(root)
        self.manifest = read_manifest(self.root, key)
        self.records = {path.with_suffix(".tar").name: json.loads(path.read_text())
                        for path in sorted((self.root / "shards").glob("*.json"))
                        if path.with_suffix(".tar").is_file()}

    def keys(self) -> set[str]:
        return {key for record in self.records.values() for key in record["keys"]}

    def check(self, cfg: RootConfig) -> ClipSelection:
        """Refuse latents the configuration cannot train on (naming the key), and return the clips of
        them that `data.filter` / `data.version` select (every encoded clip when neither is set)."""
        conflict = settings_conflict(self.manifest["settings"], cfg)
        if conflict:
            key, value, recorded = conflict
            raise ConfigError(key, f"is {value!r}, but the latents at {self.root} were encoded with {recorded!r}: "
                                   f"set {key}={recorded} or encode again (mvideo encode)")
        if not (self.root / EMPTY_PROMPT).is_file():
            raise ConfigError("data.latents", f"{self.root} holds no {EMPTY_PROMPT} (encoded by an earlier version): "
                                              "run `mvideo encode` with the same settings again to add it")
        if len(self.records) < self.manifest["shards"]:
            raise ConfigError("data.latents", f"{self.root} holds {len(self.records)} of its "
                                              f"{self.manifest['shards']} shards: rerun `mvideo encode` to finish it")
        if self.manifest["seed"] != cfg.run.seed:
            log.info("latents were cut with seed %d, this run's is %d: the clips' windows are those of the "
                     "encode run", self.manifest["seed"], cfg.run.seed)
        return self._selection(cfg.data)

    def _selection(self, data: DataConfig) -> ClipSelection:
        encoded = self.keys()
        if not (data.filter or data.version):
            return ClipSelection(frozenset(encoded), frozenset(self.records))
        selected = select_clips(replace(data, shards=data.shards or self.manifest["source"]))
        missing = sorted(set(selected.keys or ()) - encoded)
        if selected.keys is None or missing:
            key = "data.filter" if data.filter else "data.version"
            selection = {k: v for k, v in self.manifest.items() if k in ("filter", "version") and v}
            raise ConfigError(key, f"selects {len(missing)} clips the latents at {self.root} do not hold "
                                   f"(e.g. {missing[:3]}; they were encoded with {selection or 'no selection'}): "
                                   "encode them (mvideo encode with this selection)")
        shards = frozenset(name for name, record in self.records.items() if set(record["keys"]) & selected.keys)
        return ClipSelection(selected.keys, shards)


class LatentClipDataset(ClipDataset):
    """ClipDataset's order, split, rank sharding and resume over latent shards: yields
    {"latents" [C, T', H', W'], "text" [L, D], "mask" [L], "caption", "key"}. Each clip's window is the
    one the encode run cut (its epoch 0), in every epoch."""

    def __init__(self, cfg: RootConfig, split: str, seed: int, repeat: bool, skip_batches: int = 0):
        self.cfg, self.split, self.seed, self.repeat = cfg.data, split, seed, repeat
        self.skip_batches = skip_batches
        store = LatentStore(cfg.data.latents)
        self.selection = store.check(cfg)
        self.shards = [str(store.root / "shards" / name) for name in sorted(store.records)
                       if self.selection.reads_shard(name)]
        self.dp_rank, self.dp_size = data_parallel_position()

    def _readable(self, sample: dict) -> bool:
        if all(member in sample for member in (LATENT, TEXT, META)):
            return True
        log.warning("skipping clip %s: no %s, %s and %s", sample["__key__"], LATENT, TEXT, META)
        return False

    def _decoded(self, sample: dict, epoch: int) -> dict:
        return read_sample(sample)


def build_latent_loader(cfg: RootConfig, split: str, seed: int, repeat: bool, skip_batches: int = 0) -> DataLoader:
    """Batches {"latents" [B, C, T', H', W'], "text" [B, L, D], "mask" [B, L], "caption", "key",
    "skipped"}."""
    dataset = LatentClipDataset(cfg, split, seed, repeat, skip_batches)
    workers = cfg.data.num_workers if split == "train" else 0
    return DataLoader(dataset, batch_size=cfg.data.batch_size, collate_fn=collate, drop_last=split == "train",
                      **worker_options(workers))
