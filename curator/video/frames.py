"""Frame batch helpers that accept numpy (CPU decode) or CUDA tensors (NVDEC) alike."""
from __future__ import annotations

from fractions import Fraction
from typing import Any, NamedTuple

import cv2
import numpy as np


class Chunk(NamedTuple):
    """A run of decoded frames: their indices, the frames (numpy or CUDA tensor), PyAV timestamps,
    and, when the decoder was asked to keep them, the same frames at a second size (`kept`)."""
    indices: np.ndarray
    frames: Any
    pts: np.ndarray | None = None
    kept: Any = None


def frame_rate(fps: float) -> Fraction:
    """fps as the exact rational containers store (23.976 -> 24000/1001)."""
    return Fraction(fps).limit_denominator(1001)


def area_resize(frame: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """One (h, w, 3) uint8 frame shrunk to size=(h, w); the frame itself when `size` is None or its own.

    OpenCV's INTER_AREA is vectorised only at exactly half size and is slow at other ratios (slower
    than the decode). So the frame is halved while it is at least twice the target each way, and
    the last step, now under 2x, is bilinear: its two taps still cover every source pixel, and it
    stays closer to a true area resize than swscale's own AREA scaler (benchmarks/notes.md,
    "Figures behind the curator's code"). A last step of 2x or more
    in one direction (a large aspect change) keeps INTER_AREA.
    """
    if size is None:
        return frame
    height, width = size
    while frame.shape[0] >= 2 * height and frame.shape[1] >= 2 * width:
        frame = cv2.resize(frame, (frame.shape[1] // 2, frame.shape[0] // 2), interpolation=cv2.INTER_AREA)
    if frame.shape[:2] == (height, width):
        return frame
    under_2x = frame.shape[0] < 2 * height and frame.shape[1] < 2 * width
    return cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR if under_2x else cv2.INTER_AREA)


def resize_batch(batch: Any, size: tuple[int, int], keep_device: bool = False) -> Any:
    """Resize (n, h, w, 3) uint8 frames to size=(h, w) with area averaging (no aliasing on shrink;
    numpy frames through `area_resize`).

    numpy in, numpy out. A torch tensor is resized on its own device; the result is moved to a host
    numpy array unless `keep_device`.
    """
    height, width = size
    if isinstance(batch, np.ndarray):
        if batch.shape[1:3] == (height, width):
            return batch
        return np.stack([area_resize(f, size) for f in batch])
    import torch.nn.functional as F

    if tuple(batch.shape[1:3]) == (height, width):
        return batch if keep_device else to_host(batch)
    x = batch.permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    out = x.round_().clamp_(0, 255).to(batch.dtype).permute(0, 2, 3, 1).contiguous()
    return out if keep_device else to_host(out)


# BT.601 limited range ("studio swing"): what swscale assumes for untagged video and what the
# encoder tags its streams with. Rows give Y, Cb, Cr from 8-bit RGB; the last column is the offset.
BT601_LIMITED = np.array([[65.481, 128.553, 24.966, 16 * 255.0],
                          [-37.797, -74.203, 112.0, 128 * 255.0],
                          [112.0, -93.786, -18.214, 128 * 255.0]], dtype=np.float32) / 255.0


def rgb_to_i420(frames: Any) -> Any:
    """RGB uint8 frames (n, h, w, 3), h and w even, to planar I420 (n, h * 3 // 2, w): Y, then the
    U and V planes at half resolution, each packed into h // 4 rows of w, the layout PyAV's
    yuv420p frames take. Chroma is taken from the mean of each 2x2 block (rounded half up), within
    0.2 levels on average of swscale's filtered chroma; OpenCV's own RGB2YUV_I420 samples one pixel
    per block instead, which aliases on sharp colour edges. numpy in (OpenCV), numpy out; a torch
    tensor is converted on its own device, so a GPU can do it before the host copy (half the bytes
    of RGB).
    """
    n, h, w = frames.shape[:3]
    if isinstance(frames, np.ndarray):
        tall = np.ascontiguousarray(frames).reshape(n * h, w, 3)  # per-pixel ops: one image for the batch
        # OpenCV's I420 luma is this matrix in fixed point; its chroma (one pixel per block) is replaced.
        luma_plane = cv2.cvtColor(tall, cv2.COLOR_RGB2YUV_I420)[:n * h].reshape(n, h, w)
        # INTER_AREA at exactly half size is the 2x2 block mean; h is even, so no block spans two frames.
        half = cv2.resize(tall, (w // 2, n * h // 2), interpolation=cv2.INTER_AREA)
        # Vectorised only as 3 channels in, 3 out (several times faster than asking for the 2 chroma channels).
        chroma = cv2.transform(half, BT601_LIMITED)[..., 1:].reshape(n, h // 2, w // 2, 2)
        out = np.empty((n, h * 3 // 2, w), dtype=np.uint8)
    else:
        import torch

        matrix = torch.as_tensor(BT601_LIMITED, device=frames.device)
        x = frames.float()
        luma_plane = _apply(x, matrix[:1])[..., 0]
        blocks = x.reshape(n, h // 2, 2, w // 2, 2, 3).sum(dim=(2, 4))
        chroma = _apply(torch.floor((blocks + 2) / 4), matrix[1:])
        out = torch.empty((n, h * 3 // 2, w), dtype=torch.uint8, device=frames.device)
    out[:, :h] = luma_plane
    out[:, h:h + h // 4] = chroma[..., 0].reshape(n, h // 4, w)
    out[:, h + h // 4:] = chroma[..., 1].reshape(n, h // 4, w)
    return out


def _apply(x: Any, matrix: Any) -> Any:
    """Affine colour transform of (..., 3) float tensor pixels, rounded half to even and saturated
    to uint8 like OpenCV's cv2.transform."""
    import torch

    return (x @ matrix[:, :3].T + matrix[:, 3]).round_().clamp_(0, 255).to(torch.uint8)


def to_host(batch: Any) -> np.ndarray:
    """numpy frames as they are; a CUDA tensor copied through page-locked memory (see
    `start_host_copy`), waiting for the copy. The array is a view of that page-locked buffer."""
    host = start_host_copy(batch)
    if isinstance(host, np.ndarray):
        return host
    _wait_for_copies(batch.device)
    return host.numpy()


def start_host_copy(batch: Any) -> Any:
    """Queue the copy of a CUDA tensor into page-locked memory on the current stream and return the
    host tensor, to be read through `gather_host`; numpy frames and CPU tensors come back as numpy.

    A copy into pageable memory is staged through the driver and stalls the other threads' NVDEC
    decodes many times over what a page-locked copy costs them. The buffers come from torch's
    caching host allocator, so they are reused.
    """
    if isinstance(batch, np.ndarray):
        return batch
    if not batch.is_cuda:
        return batch.numpy()
    import torch

    host = torch.empty(batch.shape, dtype=batch.dtype, pin_memory=True)
    host.copy_(batch, non_blocking=True)
    return host


def gather_host(copies: list[Any]) -> np.ndarray:
    """What `start_host_copy` returned, joined into one new pageable numpy array once the copies
    still queued on the current stream (where they were started) have landed; the page-locked
    buffers then go back to torch's cache."""
    if not isinstance(copies[0], np.ndarray):
        _wait_for_copies(None)
        copies = [c.numpy() for c in copies]
    return np.concatenate(copies)


def _wait_for_copies(device: Any) -> None:
    import torch

    torch.cuda.current_stream(device).synchronize()


def luma(frames: np.ndarray) -> np.ndarray:
    """BT.601 luma of RGB uint8 frames [..., H, W, 3], as uint8 (rounded): one OpenCV call over
    the frames stacked as one image, without a float copy of them."""
    flat = np.ascontiguousarray(frames).reshape(-1, frames.shape[-2], 3)
    return cv2.cvtColor(flat, cv2.COLOR_RGB2GRAY).reshape(frames.shape[:-1])
