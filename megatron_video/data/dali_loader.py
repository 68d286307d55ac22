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

A batch keeps the CPU loader's contract (megatron_video/data/dataset.py): {"video": float32
[B, 3, T, H, W] in [-1, 1] (on the GPU when decoded there), "caption": [B] str, "key": [B] str}.
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

import numpy as np
import torch

from megatron_video.config import ConfigError
from megatron_video.config.run import DataConfig
from megatron_video.data.clip_index import COMPONENTS, build_clip_index, split_member
from megatron_video.data.dataset import caption_of, data_parallel_position, list_shards
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


class DaliClipLoader:
    """An endless iterator of training batches; `state_dict()` resumes it exactly.

    `state`: a previous loader's `state_dict()`; without one, `skip_batches` batches are read
    (not decoded) and dropped, so a run first saved by the CPU loader also resumes exactly.
    `unreadable`: keys of the clips the check before training left out.
    """

    def __init__(self, cfg: DataConfig, device: torch.device, seed: int, skip_batches: int = 0,
                 state: dict | None = None, split: str = "train"):
        from nvidia.dali.plugin.pytorch import DALIGenericIterator

        self.cfg = cfg
        self.selection = select_clips(cfg)
        rank, ranks = data_parallel_position()
        shards = [s for s in list_shards(cfg.shards) if self.selection.reads_shard(s)]
        index = build_clip_index(shards, self.selection, cfg.val_fraction, split, rank, ranks)
        self.unreadable = index.unreadable
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
        self._state = {"reader": state["reader"] if state else self._reader.checkpoint(), "batches": self.batches}
        self._queued: deque[tuple[list[str], list[str], str]] = deque()  # (keys, captions, checkpoint)
        self._decoder = _decode_pipeline(self._next_encoded, cfg, device, max(cfg.num_workers, 1))
        self._iterator = DALIGenericIterator([self._decoder], ["video"])
        log.info("DALI loader (%s decode): %d clips on data-parallel rank %d of %d, %d unreadable left out",
                 "GPU" if device.type == "cuda" else "CPU", len(index.clips), rank, ranks, len(self.unreadable))

    def _next_encoded(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The decode pipeline's input: the reader's next batch, with each clip's window start."""
        encoded, metas, draws = self._reader.run()
        keys, captions, starts = [], [], []
        for clip, meta_bytes, draw in zip(encoded, metas, draws):
            key, _ = split_member(clip.source_info().rsplit(":", 1)[-1])  # "<shard>:<offset>:<member>"
            meta = json.loads(np.array(meta_bytes).tobytes())
            if key in self.selection.captions:
                meta["caption"] = self.selection.captions[key]
            keys.append(key)
            captions.append(caption_of(meta))
            last_start = max(self.num_frames[key] - self.span, 0)
            starts.append(np.int32(min(int(float(np.array(draw)) * (last_start + 1)), last_start)))
        self._queued.append((keys, captions, self._reader.checkpoint()))
        return [np.array(clip) for clip in encoded], starts

    def __iter__(self) -> DaliClipLoader:
        return self

    def __next__(self) -> dict:
        video = next(self._iterator)[0]["video"]
        keys, captions, checkpoint = self._queued.popleft()
        self.batches += 1
        self._state = {"reader": checkpoint, "batches": self.batches}
        return {"video": video, "caption": captions, "key": keys}

    def state_dict(self) -> dict:
        """The state after the last batch this loader returned."""
        return dict(self._state)
