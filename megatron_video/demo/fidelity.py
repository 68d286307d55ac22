"""Does the demo's sample show the footage it learned? PSNR of each sampled clip against the training
windows of its own caption and against those of every other caption.

A model that learned its data puts a sample closer to its own caption's clips than to the others'
(a positive margin: own mean PSNR minus the others' mean PSNR); one that learned nothing, or only
the footage's overall mean, scores the same against both or closer to the larger sources.
"""
from __future__ import annotations

import math
import pathlib
from dataclasses import dataclass

import av
import numpy as np

from megatron_video.config.run import DataConfig
from megatron_video.data.dataset import ClipDataset
from megatron_video.data.decode import to_uint8_frames


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two uint8 videos, in dB."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def read_frames(path: pathlib.Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


@dataclass
class Fidelity:
    caption: str
    own: list[float]  # PSNR against each training window of the sample's caption
    others: list[float]  # against each window of any other caption
    frames: np.ndarray  # the sample [T, H, W, 3] uint8
    closest_own: np.ndarray | None  # the own window it is closest to, for a side-by-side strip

    @property
    def margin(self) -> float:
        """Own mean PSNR minus the others' mean PSNR, in dB (nan without both)."""
        return float(np.mean(self.own) - np.mean(self.others)) if self.own and self.others else math.nan


def fidelity_table(results: list[Fidelity]) -> list[str]:
    """Markdown: per prompt, best and mean PSNR against its own caption's clips and the others', and the margin."""
    def cell(values: list[float]) -> str:
        return f"{max(values):.2f} / {np.mean(values):.2f} ({len(values)})" if values else "no clips"

    return ["| prompt | own clips: best / mean dB (clips) | other captions' clips | margin dB |",
            "| --- | ---: | ---: | ---: |",
            *[f"| {r.caption} | {cell(r.own)} | {cell(r.others)} | {r.margin:+.2f} |" for r in results]]


def training_windows(data: DataConfig, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """(caption, uint8 frames) of one window of every training clip, as the loader cuts them."""
    return [(clip["caption"], to_uint8_frames(clip["video"])) for clip in ClipDataset(data, "train", seed=seed,
                                                                                        repeat=False)]


def frames_fidelity(frames: np.ndarray, caption: str, windows: list[tuple[str, np.ndarray]]) -> Fidelity:
    """PSNR of `frames` against each window of the same size, cropped to the frames they share."""
    own, others, closest = [], [], None
    for window_caption, video in windows:
        length = min(len(video), len(frames))
        if video.shape[1:] != frames.shape[1:]:
            continue
        score = psnr(frames[:length], video[:length])
        if window_caption == caption:
            if not own or score > max(own):
                closest = video[:length]
            own.append(score)
        else:
            others.append(score)
    return Fidelity(caption, own, others, frames, closest)


def sample_fidelity(sample: pathlib.Path, caption: str, windows: list[tuple[str, np.ndarray]]) -> Fidelity:
    """Compare the mp4 `sample` with the training windows (`training_windows`)."""
    return frames_fidelity(read_frames(sample), caption, windows)
