"""The caption pass over a curated output: frames from the shards, three caption levels per clip,
the `captions` feature set (key, caption_detailed, caption_short, caption_three_word)."""
from __future__ import annotations

import importlib.util
import logging
import pathlib
import re

import pandas as pd
import torch

from curator.captions.config import CaptionConfig
from curator.captions.qwen import Captioner, TransformersQwenCaptioner, VllmQwenCaptioner
from curator.shard_clips import clip_frames
from megatron_video.config import ConfigError
from megatron_video.data.catalog import add_feature_set, shard_index

log = logging.getLogger(__name__)


def three_words(text: str) -> str:
    """The first three words, lower case, without punctuation (what buckets and balance read)."""
    return " ".join(re.findall(r"[a-z0-9]+(?:'[a-z]+)?", text.lower())[:3])


def build_captioner(cfg: CaptionConfig, device: torch.device) -> Captioner:
    use_vllm = cfg.backend == "vllm" or (cfg.backend == "auto" and device.type == "cuda"
                                         and importlib.util.find_spec("vllm") is not None)
    if use_vllm:
        return VllmQwenCaptioner(cfg.model, cfg.dtype)
    dtype = getattr(torch, cfg.dtype) if device.type == "cuda" else torch.float32
    return TransformersQwenCaptioner(cfg.model, device, dtype, (cfg.frame_height, cfg.frame_width))


def caption_batch(captioner: Captioner, frames: list, durations: list[float], cfg: CaptionConfig) -> dict:
    detailed = captioner.describe(frames, durations, cfg.detailed_prompt, cfg.detailed_tokens)
    short = captioner.complete([cfg.short_prompt.format(detailed=d) for d in detailed], cfg.short_tokens)
    three = captioner.complete([cfg.three_word_prompt.format(detailed=d) for d in detailed], cfg.three_word_tokens)
    return {"caption_detailed": detailed, "caption_short": short, "caption_three_word": [three_words(t) for t in three]}


def run_captions(cfg: CaptionConfig, device: torch.device) -> pd.DataFrame:
    if not cfg.root:
        raise ConfigError("root", "name the curated output to caption (caption.root=DIR)")
    if not (pathlib.Path(cfg.model) / "config.json").is_file():
        raise ConfigError("model", f"'{cfg.model}' is not a local Qwen2.5-VL checkpoint folder (no config.json)")
    rows = shard_index(cfg.root)
    if not len(rows):
        raise ConfigError("root", f"no catalog under {cfg.root}: curate into it first")
    captioner = build_captioner(cfg, device)
    durations = dict(zip(rows["key"], rows["duration_s"]))
    parts, batch = [], []

    def flush() -> None:
        captions = caption_batch(captioner, [f for _, f in batch], [durations[k] for k, _ in batch], cfg)
        parts.append(pd.DataFrame({"key": [k for k, _ in batch], **captions}))
        log.info("caption clips=%d of %d", sum(map(len, parts)), len(rows))
        batch.clear()

    for item in clip_frames(rows, cfg.frames_per_clip):
        batch.append(item)
        if len(batch) == cfg.batch_size:
            flush()
    if batch:
        flush()
    frame = pd.concat(parts, ignore_index=True)
    frame["caption"] = frame[f"caption_{cfg.training_text}"]  # what the trainer reads (data/selection.py)
    path = add_feature_set(cfg.root, cfg.output, frame, replace=True)
    log.info("caption wrote %d clips -> %s", len(frame), path)
    return frame
