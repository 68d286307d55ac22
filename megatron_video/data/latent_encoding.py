"""`mvideo encode`: the VAE and the text encoder over curated shards, once, into latent shards.

Each input shard (those holding a clip that `data.filter` / `data.version` select) becomes one
latent shard, written under a temporary name and renamed into place after its record, so a killed
run loses at most the shards in progress and a rerun encodes exactly the missing ones. Under
torchrun (or srun) each rank takes every WORLD_SIZE-th input shard. A rerun into a directory encoded
with other settings is refused (encode.output), as is a selection it does not hold at training time.
Logs are one line per shard: `encode shard=<name> clips=<n> failed=<n> s=<seconds>`.
"""
from __future__ import annotations

import logging
import os
import pathlib
import time
from dataclasses import dataclass

import torch
import webdataset as wds
from tqdm import tqdm

from megatron_video.config import ConfigError
from megatron_video.config.schema import RootConfig
from megatron_video.data import latent_shards as fmt
from megatron_video.data.clip_encoder import ClipEncoder
from megatron_video.data.dataset import list_shards, readable_clip
from megatron_video.data.selection import ClipSelection, select_clips
from megatron_video.training.environment import resolve_device

log = logging.getLogger(__name__)


@dataclass
class EncodeSummary:
    output: str
    shards: int  # input shards this rank is responsible for
    already_done: int  # of them, finished by an earlier run
    clips: int = 0  # encoded by this run
    failed: int = 0  # clips that did not decode
    wall_s: float = 0.0


def output_dir(cfg: RootConfig) -> pathlib.Path:
    return pathlib.Path(cfg.encode.output or pathlib.Path(cfg.run.output_dir) / "latents")


def shard_name(root: str, shard: str) -> str:
    """A latent shard's name: its input shard's path under the curated root, '/' -> '--'."""
    relative = os.path.relpath(shard, root)
    return relative.removesuffix(".tar").replace(os.sep, "--")


def _claim_output(out: pathlib.Path, cfg: RootConfig, shards: int) -> None:
    """Write the manifest, or check that the one there describes this run (same settings, source,
    selection and shard count), so a resumed run never mixes two encodings in one directory."""
    manifest = {"format": fmt.FORMAT, "settings": fmt.encoding_settings(cfg), "source": str(cfg.data.shards),
                "filter": cfg.data.filter, "version": cfg.data.version, "seed": cfg.run.seed,
                "dtype": cfg.encode.dtype, "shards": shards}
    (out / "shards").mkdir(parents=True, exist_ok=True)
    if not (out / fmt.MANIFEST).exists():
        fmt.write_json(out / fmt.MANIFEST, manifest)
        return
    recorded = fmt.read_manifest(out, "encode.output")
    conflict = fmt.settings_conflict(recorded["settings"], cfg)
    differing = [conflict[0]] if conflict else [k for k in ("filter", "version", "seed", "dtype", "shards")
                                                 if recorded.get(k) != manifest[k]]
    if differing:
        raise ConfigError("encode.output", f"{out} holds latents encoded with another {differing[0]} "
                                           f"({recorded.get(differing[0], recorded['settings'].get(differing[0]))!r}):"
                                           " choose another encode.output or delete it")


def _is_done(out: pathlib.Path, name: str) -> bool:
    return (out / "shards" / f"{name}.tar").is_file() and (out / "shards" / f"{name}.json").is_file()


class _ShardEncoder:
    """One input shard -> one latent shard, in the input's sample order, `batch_size` clips at a time."""

    def __init__(self, encoder: ClipEncoder, selection: ClipSelection, cfg: RootConfig, progress: tqdm):
        self.encoder, self.selection, self.progress = encoder, selection, progress
        self.batch_size = cfg.encode.batch_size
        self.clips = 0  # written by this run, for the progress bar
        self.dtype = getattr(torch, cfg.encode.dtype)

    def run(self, shard: str, out: pathlib.Path, name: str) -> tuple[int, int]:
        started = time.perf_counter()
        target = out / "shards" / f"{name}.tar"
        partial = target.with_name(f"{target.name}.partial")
        written: list[str] = []
        failed: list[str] = []
        with wds.TarWriter(str(partial)) as sink:
            batch: list[dict] = []
            source = wds.WebDataset([shard], shardshuffle=False, nodesplitter=None, workersplitter=None,
                                    handler=wds.warn_and_continue, empty_check=False)
            for sample in source:
                if not self.selection.includes(sample["__key__"]):
                    continue
                if not readable_clip(sample):
                    failed.append(sample["__key__"])
                    continue
                batch.append(sample)
                if len(batch) == self.batch_size:
                    self._write(batch, sink, shard, written, failed)
                    batch = []
            if batch:
                self._write(batch, sink, shard, written, failed)
        fmt.write_json(out / "shards" / f"{name}.json", {"source": shard, "keys": written, "failed": failed})
        os.replace(partial, target)  # the commit point: the shard is done
        log.info("encode shard=%s clips=%d failed=%d s=%.1f", name, len(written), len(failed),
                 time.perf_counter() - started)
        return len(written), len(failed)

    def _write(self, batch: list[dict], sink: wds.TarWriter, shard: str, written: list[str], failed: list[str]):
        encoded = self.encoder.encode(batch) or {"key": []}
        failed.extend(sorted({s["__key__"] for s in batch} - set(encoded["key"])))
        for row, key in enumerate(encoded["key"]):
            sink.write(fmt.sample_members(key, encoded["latents"][row], encoded["text"][row], encoded["mask"][row],
                                     encoded["caption"][row], shard, self.dtype))
            written.append(key)
        self.clips += len(encoded["key"])
        self.progress.set_postfix(clips=self.clips, refresh=False)


def encode_latents(cfg: RootConfig) -> EncodeSummary:
    """Encode this rank's share of the selected input shards that are not done yet."""
    started = time.perf_counter()
    if not cfg.data.shards:
        raise ConfigError("data.shards", "is required: the curated output dir to encode")
    out = output_dir(cfg)
    selection = select_clips(cfg.data)
    shards = [s for s in list_shards(cfg.data.shards) if selection.reads_shard(s)]
    _claim_output(out, cfg, len(shards))
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    mine = {shard_name(cfg.data.shards, s): s for s in shards[rank::world]}
    pending = {name: s for name, s in mine.items() if not _is_done(out, name)}
    summary = EncodeSummary(str(out), len(mine), len(mine) - len(pending))
    log.info("encode rank=%d/%d shards=%d done=%d pending=%d output=%s", rank, world, len(mine),
             summary.already_done, len(pending), out)
    if pending or not (out / fmt.EMPTY_PROMPT).is_file():
        device = resolve_device(cfg.run.device)
        encoder = ClipEncoder(cfg.data, cfg.encoders, cfg.run.seed, selection.captions, device,
                              pathlib.Path(cfg.run.output_dir))
        fmt.write_empty_prompt(out, encoder.text)
        with tqdm(total=len(pending), desc=f"encode rank {rank}", unit="shard",
                  disable=not cfg.run.progress) as progress:
            writer = _ShardEncoder(encoder, selection, cfg, progress)
            for name, shard in pending.items():
                done, failed = writer.run(shard, out, name)
                summary.clips += done
                summary.failed += failed
                progress.update(1)
    summary.wall_s = time.perf_counter() - started
    return summary
