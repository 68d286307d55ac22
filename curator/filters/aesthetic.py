"""Aesthetic and technical quality with DOVER (Wu et al. 2023, "Exploring Video Quality Assessment
on User Generated Contents from Aesthetic and Technical Perspectives") through ONNX Runtime.

The model is DOVER's ONNX export (the DOVER repository's convert_to_onnx.py; DOVER-Mobile exports
the same way) from a local file, `curate.filters.aesthetic_model`. It takes two views of a clip,
read by name or else by position, shapes from the model itself (dynamic axes default to DOVER's):
- aesthetic view [1, 3, T, H, W]: T frames spread over the clip, resized to H x W;
- technical view [N, 3, T, H, W]: the same frames as fragments, a grid of FRAGMENT x FRAGMENT
  patches cut at native resolution from the cells of a G x G grid (H = G * FRAGMENT), so blur and
  compression stay visible; N clips of the same fragments.
Both normalised with ImageNet statistics on 0..255 pixels, as DOVER's own reader does. Its two
raw outputs are mapped to [0, 1] as DOVER's inference script does: sigmoid((a - 0.1107) / 0.07355)
for aesthetics, sigmoid((t + 0.08285) / 0.03774) for technical quality.

Without a model (the default: DOVER's weights are not downloadable on every machine) the stage is
left out of the pipeline and the aesthetic columns are null, so no clip is rejected for them; a
path that names no file is refused before any work.
"""
from __future__ import annotations

import pathlib

import cv2
import numpy as np

MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)
FRAGMENT = 32
DEFAULT_SHAPE = (1, 3, 32, 224, 224)
AESTHETIC_SHIFT, AESTHETIC_SCALE = 0.1107, 0.07355
TECHNICAL_SHIFT, TECHNICAL_SCALE = -0.08285, 0.03774


def _sigmoid(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-x)))


def _shape(arg) -> tuple[int, ...]:
    """An input's shape, DOVER's default for each dynamic axis."""
    return tuple(d if isinstance(d, int) and d > 0 else DEFAULT_SHAPE[i] for i, d in enumerate(arg.shape))


def spread_frames(frames: np.ndarray, count: int) -> np.ndarray:
    """`count` frames spread evenly over the clip (repeating frames of a shorter clip)."""
    return frames[np.linspace(0, len(frames) - 1, count).round().astype(np.int64)]


def aesthetic_view(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """float32 [3, T, H, W]: frames resized whole, normalised."""
    resized = np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in frames])
    return ((resized.astype(np.float32) - MEAN) / STD).transpose(3, 0, 1, 2)


def technical_view(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """float32 [3, T, H, W]: each output cell a FRAGMENT-sized patch at native resolution from the
    centre of the matching cell of the frame (the same place in every frame, so motion stays)."""
    rows, cols = max(1, height // FRAGMENT), max(1, width // FRAGMENT)
    src_h, src_w = frames.shape[1:3]
    if src_h < rows * FRAGMENT or src_w < cols * FRAGMENT:  # too small to cut: upscale first
        scale = max(rows * FRAGMENT / src_h, cols * FRAGMENT / src_w)
        frames = np.stack([cv2.resize(f, (int(np.ceil(src_w * scale)), int(np.ceil(src_h * scale)))) for f in frames])
        src_h, src_w = frames.shape[1:3]
    out = np.zeros((len(frames), rows * FRAGMENT, cols * FRAGMENT, 3), dtype=np.uint8)
    for r in range(rows):
        for c in range(cols):
            y = int((r + 0.5) * src_h / rows) - FRAGMENT // 2
            x = int((c + 0.5) * src_w / cols) - FRAGMENT // 2
            y, x = min(max(0, y), src_h - FRAGMENT), min(max(0, x), src_w - FRAGMENT)
            out[:, r * FRAGMENT:(r + 1) * FRAGMENT, c * FRAGMENT:(c + 1) * FRAGMENT] = frames[:, y:y + FRAGMENT,
                                                                                          x:x + FRAGMENT]
    if out.shape[1:3] != (height, width):
        out = np.stack([cv2.resize(f, (width, height)) for f in out])
    return ((out.astype(np.float32) - MEAN) / STD).transpose(3, 0, 1, 2)


class DoverScorer:
    """DOVER's ONNX export on ONNX Runtime (CUDA provider where available)."""

    def __init__(self, path: str, device: str = "cpu", threads: int = 1):
        import onnxruntime as ort

        if not pathlib.Path(path).is_file():
            raise FileNotFoundError(f"no DOVER ONNX model at {path}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        if device == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(path, options, providers=providers)
        inputs = {arg.name: arg for arg in self.session.get_inputs()}
        if len(inputs) != 2:
            raise ValueError(f"{path} has {len(inputs)} inputs; DOVER's export has two (aesthetic, technical views)")
        named = [next((a for n, a in inputs.items() if key in n.lower()), None) for key in ("aes", "tech")]
        self.aesthetic, self.technical = named if all(named) else list(inputs.values())
        self.frames_read = max(_shape(self.aesthetic)[2], _shape(self.technical)[2])

    def score(self, frames: np.ndarray) -> dict[str, float]:
        """{"aesthetic_score", "technical_score"} in [0, 1] of a clip's RGB uint8 frames [T, H, W, 3]."""
        a_shape, t_shape = _shape(self.aesthetic), _shape(self.technical)
        a_view = aesthetic_view(spread_frames(frames, a_shape[2]), a_shape[3], a_shape[4])
        t_view = technical_view(spread_frames(frames, t_shape[2]), t_shape[3], t_shape[4])
        feeds = {self.aesthetic.name: np.ascontiguousarray(a_view[None]),
                 self.technical.name: np.ascontiguousarray(np.repeat(t_view[None], t_shape[0], axis=0))}
        aesthetic, technical = (float(np.mean(out)) for out in self.session.run(None, feeds)[:2])
        return {"aesthetic_score": _sigmoid((aesthetic - AESTHETIC_SHIFT) / AESTHETIC_SCALE),
                "technical_score": _sigmoid((technical - TECHNICAL_SHIFT) / TECHNICAL_SCALE)}
