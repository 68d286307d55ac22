"""Does the demo's sample show the footage it learned? PSNR of the sampled clip against the training
windows of its own caption and against those of every other caption.

A model that learned its data puts the sample closer to its own caption's clips than to the others'
(a higher best PSNR); one that learned nothing scores the same against both.
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

    def lines(self) -> list[str]:
        def summary(values: list[float]) -> str:
            return (f"best {max(values):.2f} dB, mean {np.mean(values):.2f} dB over {len(values)} clips"
                    if values else "no clips")

        return [f"PSNR of the sample (prompt '{self.caption}') against the training clips:",
                "", f"- its own caption's clips: {summary(self.own)}",
                f"- other captions' clips: {summary(self.others)}"]


def training_windows(data: DataConfig, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """(caption, uint8 frames) of one window of every training clip, as the loader cuts them."""
    return [(clip["caption"], to_uint8_frames(clip["video"])) for clip in ClipDataset(data, "train", seed=seed,
                                                                                        repeat=False)]


def frames_fidelity(frames: np.ndarray, caption: str, windows: list[tuple[str, np.ndarray]]) -> Fidelity:
    """PSNR of `frames` against each window of the same size, cropped to the frames they share."""
    own, others = [], []
    for window_caption, video in windows:
        length = min(len(video), len(frames))
        if video.shape[1:] != frames.shape[1:]:
            continue
        (own if window_caption == caption else others).append(psnr(frames[:length], video[:length]))
    return Fidelity(caption, own, others)


def sample_fidelity(sample: pathlib.Path, caption: str, data: DataConfig, seed: int = 0) -> Fidelity:
    """Compare the mp4 `sample` with one window of every training clip."""
    return frames_fidelity(read_frames(sample), caption, training_windows(data, seed))
