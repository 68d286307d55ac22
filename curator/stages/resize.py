"""Resize stage: take the clip's frames (from the video's single decode, or, for clips whose
content crop needs more detail than that copy holds, by decoding the clip's range again), re-time
them to the output fps, crop and scale every kept frame to height x width in one batch.

Re-timing picks the nearest source frame for each output instant, so 30 fps footage loses frames
and 10 fps footage repeats them. After the content crop, a centred crop to the output aspect ratio
avoids stretching.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from curator.config import CurateConfig
from curator.stages.base import Resources, Stage
from curator.stages.clip_length import output_frame_count
from curator.tasks import FAILED, ClipTask, CropBox, Task
from curator.video.backend import decode_range, use_gpu
from curator.video.frames import resize_batch


def source_indices(start_frame: int, end_frame: int, source_fps: float, fps: float) -> np.ndarray:
    """For each output frame, the source frame shown at its instant."""
    count = output_frame_count(start_frame, end_frame, source_fps, fps)
    picks = start_frame + np.round(np.arange(count) * source_fps / fps).astype(np.int64)
    return np.minimum(picks, end_frame - 1)


def aspect_box(box: CropBox, height: int, width: int) -> CropBox:
    """The largest centred sub-box of `box` with aspect width:height."""
    h, w = box.bottom - box.top, box.right - box.left
    if w * height > h * width:
        new_w = max(1, round(h * width / height))
        left = box.left + (w - new_w) // 2
        return CropBox(box.top, box.bottom, left, left + new_w)
    new_h = max(1, round(w * height / width))
    top = box.top + (h - new_h) // 2
    return CropBox(top, top + new_h, box.left, box.right)


def decode_size(source_h: int, source_w: int, box: CropBox, height: int, width: int) -> tuple[float, tuple[int, int]]:
    """(scale, (h, w)): the smallest whole-frame size at which `box` still covers height x width.

    Letting the decoder's scaler shrink frames first makes the RGB conversion and the final resize
    work on far fewer pixels whenever the source is larger than the output.
    """
    scale = min(1.0, max(height / (box.bottom - box.top), width / (box.right - box.left)))
    return scale, (max(2, round(source_h * scale / 2) * 2), max(2, round(source_w * scale / 2) * 2))


@dataclass
class ResizeStage(Stage):
    name = "resize"
    # The output clips' size and frame rate.
    height: int = 352
    width: int = 640
    fps: float = 24.0
    chunk_frames: int = 64  # frames per chunk when a clip's range is decoded again

    def __post_init__(self) -> None:
        self.resources = Resources(cpus=1.0, gpus=0.1 if use_gpu(self.device) else 0.0)

    @classmethod
    def from_config(cls, cfg: CurateConfig) -> ResizeStage:
        return cls(device=cfg.device, height=cfg.height, width=cfg.width, fps=cfg.fps,
                   chunk_frames=cfg.decode_chunk_frames)

    def inputs(self) -> list[str]:
        return ["crop", "start_frame", "end_frame"]

    def outputs(self) -> list[str]:
        return ["frames", "num_frames"]

    def process(self, task: ClipTask) -> list[Task]:
        meta = task.source_meta
        picks = source_indices(task.start_frame, task.end_frame, task.source_fps, self.fps)
        box = aspect_box(task.crop, self.height, self.width)
        scale, size = decode_size(meta.height, meta.width, box, self.height, self.width)
        sy, sx = size[0] / meta.height, size[1] / meta.width
        top, bottom = int(box.top * sy), max(int(box.top * sy) + 1, round(box.bottom * sy))
        left, right = int(box.left * sx), max(int(box.left * sx) + 1, round(box.right * sx))
        frames, task.source_frames = task.source_frames, None
        # The decode pass kept frames at exactly the size a re-decode of this clip would use.
        if frames is not None and len(frames) == task.end_frame - task.start_frame and (
                task.source_frames_size == (size if scale < 1 else None)):
            rows = picks - task.start_frame
            if not isinstance(frames, np.ndarray):  # CUDA tensors from NVDEC: gather and resize on the GPU
                import torch

                rows = torch.as_tensor(rows, device=frames.device)
            batch = frames[rows][:, top:bottom, left:right]
            # Left on the GPU: the encode stage converts to I420 there before the host copy.
            task.frames = resize_batch(batch, (self.height, self.width), keep_device=True)
            task.num_frames = len(picks)
            return [task]
        del frames
        wanted, start, end = task.source_frames_for(picks)
        unique = np.unique(wanted)
        out = np.empty((len(picks), self.height, self.width, 3), dtype=np.uint8)
        filled = np.zeros(len(picks), dtype=bool)
        for chunk in decode_range(task.source, task.source_meta.decoder, self.chunk_frames, start,
                                  end, size=size if scale < 1 else None, indices=unique,
                                  frame_pts=task.frame_pts):
            indices = chunk.indices
            resized = resize_batch(chunk.frames[:, top:bottom, left:right], (self.height, self.width))
            # Every output frame showing one of these source frames (repeats when upsampling fps).
            slots = np.searchsorted(indices, wanted)
            hit = (slots < len(indices)) & (indices[np.minimum(slots, len(indices) - 1)] == wanted)
            out[hit] = resized[slots[hit]]
            filled |= hit
        if not filled.all():
            task.reject(FAILED, f"resize: decoded {int(filled.sum())} of {len(picks)} frames of {task.key}")
            return [task]
        task.frames = out
        task.num_frames = len(picks)
        return [task]
