"""text_detection_threads: the crop stage's text detection called from many worker threads at once,
as the curation pipeline calls it, through the shared batching detector (curator/filters/
text_detector.py) against the path it replaced (every worker thread running the DBNet graph's torch
calls itself on its own CUDA stream, copying frames in and probabilities out through pageable memory).

Each clip is the crop's detection input: two uint8 BGR frames of 288 x 512 (a 720p clip's two OCR
frames), cut from synthetic 720p shots. `--threads` threads (the pipeline's clip workers) each
detect `--clips` clips, all released at once; both sides warm (the graph loaded, one clip detected
first). Metrics per side: seconds for all clips, clips/s, the mean wall and thread-CPU seconds of a
clip's call (wall far above CPU: the threads wait, for the GIL, a lock or the device), and for the
shared detector the batches it ran. ratio = shared clips/s / per-thread clips/s. Without NVDEC
decodes beside it this shows the GIL and launch cost only, not the pageable copies' stalls of the
decoders (the curation_pipeline benchmark's --compare-filters measures those).
"""
from __future__ import annotations

import argparse
import contextlib
import pathlib
import sys
import threading
import time

import numpy as np
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from benchmarks.common import write_result
from curator.filters.ocr import detection_input
from curator.filters.text_detector import BatchedTextDetector, detector_graph, detector_input
from curator.tracing import recording
from curator.video.synthetic import shot_frames


def clips_of(count: int, height: int, width: int) -> list[np.ndarray]:
    """`count` detection inputs of two frames each from synthetic shots of `height` x `width`."""
    return [detection_input(shot_frames(height, width, 2, seed)) for seed in range(count)]


def per_thread_probability(graph, bgr: np.ndarray) -> np.ndarray:
    """The replaced path: the calling thread runs the graph, copies through pageable memory."""
    return graph(detector_input(torch.from_numpy(bgr).to(graph.device, non_blocking=True))).float().cpu().numpy()


def run_threads(detect, clips: list[list[np.ndarray]], device: str) -> dict:
    """Each thread detects its list of clips, all threads released at once: seconds, clips/s, the
    mean wall and thread-CPU seconds of one clip's call."""
    start = threading.Barrier(len(clips) + 1)
    walls, cpus = [], []

    def work(mine: list[np.ndarray]) -> None:
        # The thread's own stream, as the pipeline's worker threads have (curator/stages/base.py).
        with torch.cuda.stream(torch.cuda.Stream(device)) if device.startswith("cuda") else contextlib.nullcontext():
            start.wait()
            for bgr in mine:
                wall, cpu = time.perf_counter(), time.thread_time()
                detect(bgr)
                walls.append(time.perf_counter() - wall)
                cpus.append(time.thread_time() - cpu)

    threads = [threading.Thread(target=work, args=(mine,)) for mine in clips]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - began
    return {"seconds": round(seconds, 4), "clips_per_s": round(len(walls) / seconds, 2),
            "clip_wall_s": round(float(np.mean(walls)), 5), "clip_cpu_s": round(float(np.mean(cpus)), 5)}


def main(argv: list[str] | None = None) -> pathlib.Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--clips", type=int, default=9, help="clips each thread detects (16 x 9 = the pipeline's 144)")
    parser.add_argument("--source", type=int, nargs=2, default=[720, 1280], metavar=("HEIGHT", "WIDTH"),
                        help="the synthetic shots' size (detection frames are at most 512 wide)")
    parser.add_argument("--quick", action="store_true", help="CPU, 2 threads of 2 72x128 clips (smoke test)")
    parser.add_argument("--results-dir", type=pathlib.Path, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.device, args.threads, args.clips, args.source = "cpu", 2, 2, [72, 128]
    height, width = args.source
    device = f"cuda:{torch.cuda.current_device()}" if args.device == "cuda" else args.device

    work = clips_of(args.threads * args.clips, height, width)
    clips = [work[i::args.threads] for i in range(args.threads)]
    graph = detector_graph(device)
    shared = BatchedTextDetector(device)
    per_thread_probability(graph, work[0])
    shared.probability(work[0])

    baseline = run_threads(lambda bgr: per_thread_probability(graph, bgr), clips, device)
    with recording() as spans:
        metrics = run_threads(shared.probability, clips, device)
    batches = [s for s in spans if s[0] == "text_detect"]
    metrics.update(batches=len(batches), batch_seconds=round(sum(e - s for _, s, e in batches), 4),
                   threads=args.threads, clips=len(work), frame=list(work[0].shape[1:3]), device=device)
    return write_result("text_detection_threads", metrics, baseline, metrics["clips_per_s"] / baseline["clips_per_s"],
                        None, args.results_dir)


if __name__ == "__main__":
    main()
