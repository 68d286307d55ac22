"""One text detector per device, shared by all worker threads of the process through a batching queue.

Workers hand in a clip's uint8 BGR detection frames (`BatchedTextDetector.probability`) and wait,
idle, for the result. One thread owns the detector (the wheel's DBNet graph as torch calls,
curator/filters/onnx_torch.py) and runs what is waiting as batches of one frame size, so that:
- the graph's ~330 torch calls are interpreted once per batch by that thread, not once per clip by
  every worker thread, each taking the GIL from the others for every call;
- the model is loaded once per device, by that thread, not raced for by every worker's first clip;
- frames go to the device and probabilities come back through page-locked memory (a pageable copy
  stalls every NVDEC decoder of the process: curator/video/frames.start_host_copy), with one sync
  per batch on the detector's own CUDA stream (never the legacy default stream).
A batch takes only the requests already waiting when it starts, as NeMo Curator's GPU stages take
the tasks they are handed: a lone clip runs at once, and while one batch runs the next gathers. It
runs padded with black frames to one of a few sizes (padded_frames): the graph sees few shapes.
"""
from __future__ import annotations

import contextlib
import pathlib
import threading
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from curator.tracing import span
from curator.video.frames import to_host

# Frames of one batch at most: 32 of 512 x 288 hold at most ~0.45 GiB of float32 activations at once.
MAX_BATCH_FRAMES = 32


def padded_frames(frames: int, max_batch_frames: int) -> int:
    """How many frames a batch of `frames` runs as: the next power of two, at most max_batch_frames,
    and beyond that the next multiple of it. Batches come in every count up to max_batch_frames, and
    the graph's first call at each new input shape costs 1.3-2.1 s on an H200 against 7-15 ms later
    (benchmarks/notes.md); padded, a frame size has a handful of shapes, each paid for once."""
    if frames > max_batch_frames:
        return -(-frames // max_batch_frames) * max_batch_frames
    return min(1 << (frames - 1).bit_length(), max_batch_frames)


def padded_batch(requests: list, max_batch_frames: int) -> np.ndarray:
    """The requests' frames, in order, followed by black frames up to padded_frames."""
    count = sum(len(r.frames) for r in requests)
    first = requests[0].frames
    out = np.zeros((padded_frames(count, max_batch_frames), *first.shape[1:]), dtype=first.dtype)
    np.concatenate([r.frames for r in requests], out=out[:count])
    return out


def detector_graph(device: str):
    """The wheel's detection network (DBNet) as torch calls on `device`."""
    import rapidocr_onnxruntime
    from rapidocr_onnxruntime.utils import read_yaml

    from curator.filters.onnx_torch import TorchGraph

    root = pathlib.Path(rapidocr_onnxruntime.__file__).parent
    return TorchGraph(str(root / read_yaml(str(root / "config.yaml"))["Det"]["model_path"]), device)


def detector_input(x):
    """uint8 BGR frames [N, H, W, 3] (a torch tensor) as DBNet's float input [N, 3, H, W] in [-1, 1]."""
    return x.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def graph_probability(graph, bgr: np.ndarray) -> np.ndarray:
    """float32 [N, 1, H, W] host probabilities of `graph` (on its device, run on the current stream)
    for uint8 BGR frames [N, H, W, 3]."""
    import torch

    x = torch.from_numpy(bgr)
    if graph.device.type == "cuda":
        x = x.pin_memory().to(graph.device, non_blocking=True)
    return to_host(graph(detector_input(x)).float())


@dataclass
class _Request:
    frames: np.ndarray
    done: Future = field(default_factory=Future)


class BatchedTextDetector:
    """The detector on `device` ("cpu" or "cuda:<index>") behind a queue served by its own thread."""

    def __init__(self, device: str, max_batch_frames: int = MAX_BATCH_FRAMES):
        self.device, self.max_batch_frames = device, max_batch_frames
        self._pending: deque[_Request] = deque()
        self._changed = threading.Condition()
        loaded: Future = Future()
        # A daemon thread living as long as the process, like the graph it holds: the executors'
        # pool threads live for one run, and every run of the process reuses this detector.
        threading.Thread(target=self._serve, args=(loaded,), name=f"text-detector-{device}", daemon=True).start()
        loaded.result()  # the graph's load error, raised to the first caller

    def probability(self, bgr: np.ndarray) -> np.ndarray:
        """float32 [N, 1, H, W]: DBNet's per-pixel text probability of uint8 BGR frames [N, H, W, 3]."""
        request = _Request(bgr)
        with self._changed:
            self._pending.append(request)
            self._changed.notify()
        return request.done.result()

    def _next_batch(self) -> list[_Request]:
        """The oldest request and those waiting behind it of its frame size, up to max_batch_frames
        frames (at least the oldest); the others keep their order."""
        with self._changed:
            self._changed.wait_for(lambda: self._pending)
            batch = [self._pending.popleft()]
            frames, shape, others = len(batch[0].frames), batch[0].frames.shape[1:], deque()
            while self._pending:
                request = self._pending.popleft()
                if request.frames.shape[1:] == shape and frames + len(request.frames) <= self.max_batch_frames:
                    batch.append(request)
                    frames += len(request.frames)
                else:
                    others.append(request)
            self._pending = others
        return batch

    def _serve(self, loaded: Future) -> None:
        try:
            stream = self._stream()
        except Exception as exc:  # noqa: BLE001 - handed to the caller waiting for the load
            loaded.set_exception(exc)
            return
        with stream:
            try:
                graph = detector_graph(self.device)
            except Exception as exc:  # noqa: BLE001 - handed to the caller waiting for the load
                loaded.set_exception(exc)
                return
            loaded.set_result(None)
            while True:
                batch = self._next_batch()
                try:
                    with span("text_detect"):
                        probability = graph_probability(graph, padded_batch(batch, self.max_batch_frames))
                except Exception as exc:  # noqa: BLE001 - each waiting stage records it against its clip
                    for request in batch:
                        request.done.set_exception(exc)
                    continue
                start = 0
                for request in batch:
                    # A copy: the batch's page-locked buffer goes back to torch's cache at once.
                    request.done.set_result(probability[start:start + len(request.frames)].copy())
                    start += len(request.frames)

    def _stream(self) -> contextlib.AbstractContextManager:
        if not self.device.startswith("cuda"):
            return contextlib.nullcontext()
        import torch

        torch.cuda.set_device(self.device)
        return torch.cuda.stream(torch.cuda.Stream(self.device))


_detectors: dict[str, BatchedTextDetector] = {}
_detectors_lock = threading.Lock()


def shared_detector(device: str) -> BatchedTextDetector:
    """The process's detector for `device` ("cuda": the calling thread's current GPU), made on first use."""
    if device == "cuda":
        import torch

        device = f"cuda:{torch.cuda.current_device()}"
    with _detectors_lock:
        if device not in _detectors:
            _detectors[device] = BatchedTextDetector(device)
        return _detectors[device]
