"""One writer for every benchmark result, so BENCHMARKS.md and the issues read one format.

Each script in benchmarks/ measures a claim side by side with its baseline in one run and calls
`write_result`, which writes benchmarks/results/<name>.json:
{"name", "device", "date", "commit", "command", "metrics", "baseline", "ratio", "target"}.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

RESULTS_DIR = pathlib.Path(__file__).resolve().parent / "results"


def device_name(gpus: int = 1) -> str:
    """The GPU's name and how many of the host's GPUs the benchmark used, where one is visible;
    else the CPU's, with the core count."""
    try:
        import torch

        if torch.cuda.is_available():
            on_host = host_gpus(torch.cuda.device_count())
            host = f" (of {on_host} on the host)" if on_host > gpus else ""
            return f"{torch.cuda.get_device_name(0)} x{gpus}{host}"
    except ImportError:
        pass
    return f"cpu {platform.processor() or platform.machine()} x{os.cpu_count()}"


def host_gpus(visible: int) -> int:
    """The host's GPUs, counting those CUDA_VISIBLE_DEVICES hides from this process (nvidia-smi
    lists them all); `visible` where nvidia-smi cannot say."""
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return visible
    return max(visible, sum(line.startswith("GPU ") for line in listing.splitlines()))


def _commit() -> str:
    """The commit the code was run at, "-dirty" when the tree differs from it. A copy of the tree
    without its history is told its commit by the caller (MVIDEO_COMMIT): the GPU machine's copy
    came with a stale history that named the session's first commit for code committed later."""
    if os.environ.get("MVIDEO_COMMIT"):
        return os.environ["MVIDEO_COMMIT"]
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=7"], capture_output=True,
                              text=True, check=True, cwd=RESULTS_DIR.parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_result(name: str, metrics: dict[str, Any], baseline: dict[str, Any], ratio: float,
                 target: float | str | None, results_dir: pathlib.Path | None = None, gpus: int = 1) -> pathlib.Path:
    """Write one result file and return its path; `ratio` is the headline (baseline / ours);
    `gpus`: how many GPUs the benchmark used."""
    out_dir = results_dir or RESULTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "name": name,
        "device": device_name(gpus),
        "date": datetime.date.today().isoformat(),
        "commit": _commit(),
        "command": " ".join([pathlib.Path(sys.argv[0]).name, *sys.argv[1:]]),
        "metrics": metrics,
        "baseline": baseline,
        "ratio": round(float(ratio), 4),
        "target": target,
    }
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record))
    return path


def time_call(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1,
              sync: Callable[[], None] | None = None) -> float:
    """Median wall time of fn() in seconds; `sync` (e.g. torch.cuda.synchronize) brackets each call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if sync:
            sync()
        start = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


def model_benchmark_args(description: str, argv: list[str] | None,
                         extra: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    """The arguments every VideoDiT benchmark takes (preset, latent shape, repeats, --quick), plus
    those `extra` adds."""
    parser = argparse.ArgumentParser(description=description)
    if extra is not None:
        extra(parser)
    parser.add_argument("--quick", action="store_true", help="tiny model on CPU (smoke test)")
    parser.add_argument("--preset", default="1b")
    parser.add_argument("--latent", type=int, nargs=3, default=[16, 64, 128], metavar=("T", "H", "W"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--results-dir", type=pathlib.Path, default=None)
    return parser.parse_args(argv)
