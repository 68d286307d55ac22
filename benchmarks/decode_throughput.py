"""decode_throughput: PyNvVideoCodec (NVDEC) vs PyAV decode, frames/s, 720p and 1080p H.264.

Both decode every frame of the same files to RGB (NVDEC into CUDA tensors through DLPack, PyAV
into host arrays), as the curation decode stage does. ratio = NVDEC fps / PyAV fps at 1080p.
PyAV or a GPU may be missing: the result says which side was absent and the ratio is then 0.
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from benchmarks.common import time_call, write_result
from curator.video import nvcodec
from curator.video.synthetic import write_test_video

CHUNK = 64


def pyav_available() -> bool:
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


def decode_all_pyav(path: str) -> int:
    from curator.video import pyav_io

    return sum(len(chunk.indices) for chunk in pyav_io.decode_chunks(path, CHUNK))


def decode_all_nvdec(path: str) -> int:
    import torch

    count = sum(len(chunk.indices) for chunk in nvcodec.decode_chunks(path, CHUNK))
    torch.cuda.synchronize()
    return count


def main(argv: list[str] | None = None) -> pathlib.Path:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small frames, few of them (CPU smoke test)")
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--results-dir", type=pathlib.Path, default=None)
    args = parser.parse_args(argv)
    sizes = {"180p": (180, 320), "360p": (360, 640)} if args.quick else {"720p": (720, 1280), "1080p": (1080, 1920)}
    frames = 48 if args.quick else args.frames
    have_pyav, have_nvdec = pyav_available(), nvcodec.available()
    metrics: dict = {"pyav_available": have_pyav, "nvdec_available": have_nvdec, "frames": frames}
    baseline: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, (height, width) in sizes.items():
            path = str(pathlib.Path(tmp) / f"{label}.mp4")
            metrics["encoder"] = write_test_video(pathlib.Path(path), height, width, shots=2,
                                                  frames_per_shot=frames // 2)
            if have_pyav:
                seconds = time_call(lambda p=path: decode_all_pyav(p), repeats=args.repeats)
                baseline[f"pyav_fps_{label}"] = round(frames / seconds, 1)
            if have_nvdec:
                seconds = time_call(lambda p=path: decode_all_nvdec(p), repeats=args.repeats)
                metrics[f"nvdec_fps_{label}"] = round(frames / seconds, 1)
    headline = list(sizes)[-1]
    ratio = 0.0
    if have_pyav and have_nvdec:
        ratio = metrics[f"nvdec_fps_{headline}"] / baseline[f"pyav_fps_{headline}"]
    metrics["headline"] = headline
    return write_result("decode_throughput", metrics, baseline, ratio, target=None, results_dir=args.results_dir)


if __name__ == "__main__":
    main()
