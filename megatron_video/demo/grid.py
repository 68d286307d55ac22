"""Contact sheets: curated clips (one row per clip, frames across) and sampled videos."""
from __future__ import annotations

import json
import pathlib

import numpy as np
import webdataset as wds

from megatron_video.data.dataset import caption_of, list_shards
from megatron_video.data.decode import decode_frames


def dataset_grid(shards_root: str, path: pathlib.Path, rows: int = 8, cols: int = 6) -> pathlib.Path:
    from megatron_video.plots import plt, save_figure

    samples = []
    for sample in wds.WebDataset(list_shards(shards_root), shardshuffle=False, empty_check=False):
        samples.append(sample)
        if len(samples) == rows:
            break
    fig, axes = plt.subplots(len(samples), 1, figsize=(cols * 1.6, len(samples) * 1.1), squeeze=False)
    for ax, sample in zip(axes[:, 0], samples):
        frames = decode_frames(sample["mp4"])
        picks = frames[np.linspace(0, len(frames) - 1, cols).round().astype(int)]
        ax.imshow(np.concatenate(list(picks), axis=1))
        meta = json.loads(sample["json"])
        ax.set_title(f"{sample['__key__']} ({len(frames)} frames) - {caption_of(meta)}", fontsize=6)
        ax.axis("off")
    return save_figure(fig, path, dpi=120)


def video_strip(mp4: pathlib.Path, path: pathlib.Path) -> pathlib.Path:
    """Every frame of a (short, sampled) video side by side, enlarged 4x without smoothing."""
    from megatron_video.plots import plt

    frames = decode_frames(mp4.read_bytes())
    strip = np.concatenate(list(frames), axis=1).repeat(4, axis=0).repeat(4, axis=1)
    plt.imsave(path, strip)
    return path


def fidelity_strip(results: list, path: pathlib.Path) -> pathlib.Path:
    """Per prompt, its sample's frames above the own training window it is closest to (a
    demo.fidelity.Fidelity each), drawn without smoothing."""
    from megatron_video.plots import plt, save_figure

    fig, axes = plt.subplots(len(results), 1, figsize=(8, 1.6 * len(results)), squeeze=False)
    for ax, result in zip(axes[:, 0], results):
        rows = [np.concatenate(list(result.frames), axis=1)]
        if result.closest_own is not None:
            rows.append(np.concatenate(list(result.closest_own), axis=1))
        width = max(row.shape[1] for row in rows)
        ax.imshow(np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows], axis=0),
                  interpolation="nearest")
        ax.set_title(f"'{result.caption}': sample (top), closest own clip (bottom), margin {result.margin:+.2f} dB",
                     fontsize=7)
        ax.axis("off")
    return save_figure(fig, path, dpi=120)
