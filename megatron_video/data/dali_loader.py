"""The DALI training loader: clips decoded, resized, cropped and normalised on the GPU.

`fn.readers.webdataset` -> `fn.decoders.video(device="mixed")` (NVDEC) -> `fn.resize` ->
`fn.crop_mirror_normalize` -> `DALIGenericIterator`, over the clips that megatron_video/data/
clip_index.py selected and checked for this data-parallel rank. On a machine without a GPU the same
graph runs with `device="cpu"` (DALI's CPU decoder reads VP8, VP9 and MJPEG only; CI uses VP9).

Two pipelines, because DALI cannot checkpoint its video decoder: the *reader* pipeline (the
webdataset reader, its shuffle buffer and the random numbers that place each clip's frame window)
is built with `enable_checkpointing=True`; the *decode* pipeline is stateless and takes the
reader's batches through `fn.external_source`. After each batch the trainer consumes, the reader's
`checkpoint()` is the loader's state: a resumed loader builds its reader from it and continues with
exactly the batch an uninterrupted run would have yielded next. The decode pipeline prefetches
ahead of the trainer; the reader checkpoints of its batches wait in a queue until they are consumed.

Clips that cannot be read never reach DALI (clip_index.py checks them first). A clip that passes
the check yet fails inside the decoder kills the decode pipeline: the loader then decodes each clip
of that batch alone to find the culprits, leaves them out (logged, listed in `unreadable`, dropped
from later epochs), and hands the rest of the batch and the batches read ahead to a new decode
pipeline. The mended batch is smaller by the clips left out. Each batch counts the clips left out
since the previous one (`SKIPPED`, the CPU loader's key): the first batch those of the check, a
mended batch those the decoder failed on; a clip left out once is not counted again in later epochs.

A batch keeps the CPU loader's contract (megatron_video/data/dataset.py): {"video": float32
[B, 3, T, H, W] in [-1, 1] (on the GPU when decoded there), "caption": [B] str, "key": [B] str,
SKIPPED: int}.
The frame window: `data.frames` frames every `data.frame_stride` from a uniformly drawn start; a
clip shorter than the window repeats its last frame. Frames are resized to cover (H, W), keeping
their aspect ratio, then centre-cropped.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import pathlib
import tempfile
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch

from megatron_video.config import ConfigError
from megatron_video.config.run import DataConfig
from megatron_video.data.clip_index import COMPONENTS, build_clip_index, split_member
from megatron_video.data.dataset import SKIPPED, caption_of, data_parallel_position, list_shards
from megatron_video.data.selection import select_clips

log = logging.getLogger(__name__)

CPU_CODECS = frozenset({"vp8", "vp9", "mjpeg"})  # what DALI's CPU video decoder reads
PREFETCH = 2  # decoded batches in flight ahead of the trainer


def dali_installed() -> bool:
    try:
        return importlib.util.find_spec("nvidia.dali") is not None
    except ModuleNotFoundError:  # no `nvidia` namespace package at all
        return False


def _reader_pipeline(paths: list[str], indexes: list[str], cfg: DataConfig, seed: int, checkpoint: str | None):
    from nvidia.dali import fn, pipeline_def

    @pipeline_def(enable_checkpointing=True)
    def reader():
        video, meta = fn.readers.webdataset(paths=paths, index_paths=indexes, ext=list(COMPONENTS),
                                            random_shuffle=True, initial_fill=cfg.shuffle_buffer,
                                            seed=seed, name="reader")
        return video, meta, fn.random.uniform(range=[0.0, 1.0], seed=seed + 1)

    return reader(batch_size=cfg.batch_size, num_threads=1, device_id=None, seed=seed, checkpoint=checkpoint)


def _decode_pipeline(source, cfg: DataConfig, device: torch.device, threads: int):
    from nvidia.dali import fn, pipeline_def, types

    gpu = device.type == "cuda"

    @pipeline_def
    def decode():
        encoded, start = fn.external_source(source=source, num_outputs=2, batch=True,
                                            dtype=[types.UINT8, types.INT32])
        frames = fn.decoders.video(encoded, device="mixed" if gpu else "cpu", start_frame=start,
                                   sequence_length=cfg.frames, stride=cfg.frame_stride, pad_mode="edge")
        frames = fn.resize(frames, size=[cfg.height, cfg.width], mode="not_smaller", antialias=True)
        return fn.crop_mirror_normalize(frames, crop=[cfg.height, cfg.width], dtype=types.FLOAT,
                                        output_layout="CFHW", mean=[127.5] * 3, std=[127.5] * 3)

    device_id = (device.index if device.index is not None else torch.cuda.current_device()) if gpu else None
    return decode(batch_size=cfg.batch_size, num_threads=threads, device_id=device_id,
                  prefetch_queue_depth=PREFETCH)


def _first_error_line(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return next((line for line in lines if "rror" in line and "Critical" not in line), lines[0] if lines else "")


@dataclass
class ReadBatch:
    """One batch from the reader pipeline: what the decoder needs, what the batch carries beside
    the video, and the reader's checkpoint after it."""

    keys: list[str]
    captions: list[str]
    encoded: list[np.ndarray]
    starts: list[np.int32]
    checkpoint: bytes


class DaliClipLoader:
    """An endless iterator of training batches; `state_dict()` resumes it exactly.

    `state`: a previous loader's `state_dict()`; without one, `skip_batches` batches are read
    (not decoded) and dropped, so a run first saved by the CPU loader also resumes exactly.
    `unreadable`: keys of the clips left out, by the check before training or by the decoder (those
    the decoder failed on travel in the state, so a resumed loader neither meets nor counts them again).
    """

    def __init__(self, cfg: DataConfig, device: torch.device, seed: int, skip_batches: int = 0,
                 state: dict | None = None, split: str = "train"):
        self.cfg = cfg
        self.selection = select_clips(cfg)
        rank, ranks = data_parallel_position()
        shards = [s for s in list_shards(cfg.shards) if self.selection.reads_shard(s)]
        index = build_clip_index(shards, self.selection, cfg.val_fraction, split, rank, ranks)
        self.checked = len(index.unreadable)  # unreadable[:checked] by the check, the rest by the decoder
        self.unreadable = index.unreadable + [key for key in (state or {}).get("unreadable", [])
                                              if key not in index.unreadable]
        if not index.clips:
            raise ConfigError("data.shards", f"data-parallel rank {rank} of {ranks} has no readable clip of the "
                                             f"{split} split in {cfg.shards}")
        undecodable = index.codecs - CPU_CODECS
        if device.type != "cuda" and undecodable:
            raise ConfigError("data.loader", f"DALI decodes only {', '.join(sorted(CPU_CODECS))} without a GPU, and "
                                             f"these clips hold {', '.join(sorted(undecodable))}: use data.loader=cpu")
        self.num_frames = index.num_frames
        self.span = (cfg.frames - 1) * cfg.frame_stride + 1
        # Replicas draw different orders and windows; ranks of one replica the same ones.
        reader_seed = (seed * 1_000_003 + rank) % (2**31 - 1)
        with tempfile.TemporaryDirectory() as folder:  # DALI parses its index files when built
            paths, indexes = index.write(pathlib.Path(folder))
            self._reader = _reader_pipeline(paths, indexes, cfg, reader_seed, state["reader"] if state else None)
            self._reader.build()
        if state is None:
            for _ in range(skip_batches):
                self._reader.run()
        self.batches = state["batches"] if state else skip_batches
        self._state = {"reader": state["reader"] if state else self._reader.checkpoint(), "batches": self.batches,
                       "unreadable": self.unreadable[self.checked:]}
        # The check's findings go with the first batch; a resumed run's first loader counted them.
        self._skipped = len(index.unreadable) if self.batches == 0 else 0
        self.device, self.threads = device, max(cfg.num_workers, 1)
        self._queued: deque[ReadBatch] = deque()  # read and handed to the decoder, not yet returned
        self._replay: deque[ReadBatch] = deque()  # read, to be handed to a rebuilt decoder
        self._iterator = self._decoding()
        log.info("DALI loader (%s decode): %d clips on data-parallel rank %d of %d, %d unreadable left out",
                 "GPU" if device.type == "cuda" else "CPU", len(index.clips), rank, ranks, len(self.unreadable))

    def _decoding(self):
        from nvidia.dali.plugin.pytorch import DALIGenericIterator

        return DALIGenericIterator([_decode_pipeline(self._next_encoded, self.cfg, self.device, self.threads)],
                                   ["video"])

    def _next_encoded(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The decode pipeline's input: the next batch read (or one to hand over again)."""
        batch = self._replay.popleft() if self._replay else self._read()
        self._queued.append(batch)
        return batch.encoded, batch.starts

    def _read(self) -> ReadBatch:
        """The reader's next batch, with each clip's window start."""
        encoded, metas, draws = self._reader.run()
        keys = [split_member(clip.source_info().rsplit(":", 1)[-1])[0] for clip in encoded]  # shard:offset:member
        # Clips the decoder failed on earlier are left out; a batch of nothing else goes to the
        # decoder whole, to be mended like the first time.
        kept = [i for i, key in enumerate(keys) if key not in self.unreadable] or list(range(len(keys)))
        captions, starts = [], []
        for key, meta_bytes, draw in zip([keys[i] for i in kept], [metas[i] for i in kept], [draws[i] for i in kept]):
            meta = json.loads(np.array(meta_bytes).tobytes())
            if key in self.selection.captions:
                meta["caption"] = self.selection.captions[key]
            captions.append(caption_of(meta))
            last_start = max(self.num_frames[key] - self.span, 0)
            starts.append(np.int32(min(int(float(np.array(draw)) * (last_start + 1)), last_start)))
        return ReadBatch([keys[i] for i in kept], captions, [np.array(encoded[i]) for i in kept], starts,
                         self._reader.checkpoint())

    def __iter__(self) -> DaliClipLoader:
        return self

    def __next__(self) -> dict:
        try:
            video = next(self._iterator)[0]["video"]
        except RuntimeError as err:  # a clip the check passed failed inside the decoder
            self._rebuild_past_bad_clips(err)
            return next(self)
        batch = self._queued.popleft()
        self._advance(batch)
        skipped, self._skipped = self._skipped, 0
        return {"video": video, "caption": batch.captions, "key": batch.keys, SKIPPED: skipped}

    def _advance(self, batch: ReadBatch) -> None:
        """The position after `batch`, and the clips the decoder left out so far."""
        self.batches += 1
        self._state = {"reader": batch.checkpoint, "batches": self.batches,
                       "unreadable": self.unreadable[self.checked:]}

    def _rebuild_past_bad_clips(self, err: RuntimeError) -> None:
        """The failed pipeline is dead: find the batch's clips that fail alone, leave them out (logged
        and listed in `unreadable`), and hand the rest, then the batches read ahead, to a new one.
        The batch comes out smaller by the clips left out; what follows is unchanged, so a run that
        resumes before this batch meets and mends it the same way."""
        failed, ahead = self._queued.popleft(), list(self._queued)
        self._queued.clear()
        bad = [i for i in range(len(failed.keys)) if not self._decodes(failed.encoded[i], failed.starts[i])]
        if not bad:
            raise err
        for i in (i for i in bad if failed.keys[i] not in self.unreadable):
            log.warning("skipping clip %s: the decoder failed on it (%s)", failed.keys[i], _first_error_line(err))
            self.unreadable.append(failed.keys[i])
            self._skipped += 1
        kept = [i for i in range(len(failed.keys)) if i not in bad]
        mended = ReadBatch([failed.keys[i] for i in kept], [failed.captions[i] for i in kept],
                           [failed.encoded[i] for i in kept], [failed.starts[i] for i in kept], failed.checkpoint)
        if not kept:  # nothing left of it: the position moves past it all the same (its count goes with the next)
            self._advance(failed)
        self._replay.extend(([mended] if kept else []) + ahead)
        self._iterator = self._decoding()

    def _decodes(self, encoded: np.ndarray, start: np.int32) -> bool:
        """Whether one clip decodes, alone in a pipeline of its own."""
        pipe = _decode_pipeline(lambda: ([encoded], [start]), self.cfg, self.device, 1)
        try:
            pipe.build()
            pipe.run()
        except RuntimeError:
            return False
        return True

    def state_dict(self) -> dict:
        """The state after the last batch this loader returned."""
        return dict(self._state)
