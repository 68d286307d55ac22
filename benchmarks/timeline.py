"""A curation run's timeline: how many video jobs, NVDEC calls, clip jobs and encoder calls (and
calls of each stage) were under way, and how many cores were busy, per time bin
(`curation_pipeline.py --timeline`).

The spans come from `curator.tracing`; the cores from /proc/stat, sampled on a thread of this
process (Linux only: elsewhere the CPU series stay empty). Encoder processes run niced, so the
"nice" series is the libx264 pool, "user" the curating process (and anything else on the machine).
"""
from __future__ import annotations

import itertools
import os
import pathlib
import threading
import time
from typing import Self

# Drawn in the top panel; the stages' own spans (named after them) are summarised in the JSON too.
KINDS = ("video_job", "decode_call", "clip_job", "encoder_call")
# /proc/stat's aggregate cpu line: user nice system idle iowait irq softirq, in clock ticks.
_USER, _NICE, _SYSTEM, _IDLE, _IOWAIT, _IRQ, _SOFTIRQ = range(7)


def _read_cpu_ticks() -> list[int] | None:
    try:
        with open("/proc/stat") as f:
            return [int(x) for x in f.readline().split()[1:8]]
    except (OSError, ValueError):
        return None


class CpuSampler:
    """Samples the machine's CPU ticks every `interval_s` while in its `with` block."""

    def __init__(self, interval_s: float = 0.05):
        self.interval_s = interval_s
        self.samples: list[tuple[float, list[int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            ticks = _read_cpu_ticks()
            if ticks is None:
                return
            self.samples.append((time.perf_counter(), ticks))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _busy_cores(samples: list[tuple[float, list[int]]], lo: float, hi: float,
                cores: int) -> tuple[float | None, ...]:
    """Cores busy as (user, nice, system) from the last sample at or before `lo` to the first at or
    after `hi` (the sampler thread may fall behind when the GIL is busy); None without two samples."""
    before = [s for s in samples if s[0] <= lo] or samples[:1]
    after = [s for s in samples if s[0] >= hi] or samples[-1:]
    if not before or not after or after[0][0] <= before[-1][0]:
        return (None,) * 3
    delta = [b - a for a, b in zip(before[-1][1], after[0][1], strict=True)]
    total = sum(delta) or 1
    system = delta[_SYSTEM] + delta[_IRQ] + delta[_SOFTIRQ]
    return tuple(round(cores * x / total, 2) for x in (delta[_USER], delta[_NICE], system))


def summarize(spans: list[tuple[str, float, float]], samples: list[tuple[float, list[int]]], start: float,
              end: float, bin_s: float = 0.25, cores: int | None = None) -> dict:
    """Per bin of `bin_s` seconds from `start` to `end`: the mean number of spans of each kind under
    way (`KINDS` first, then every other kind recorded), and the cores busy; plus each kind's summed
    seconds."""
    cores = cores or os.cpu_count() or 1
    bins = max(1, round((end - start) / bin_s))
    edges = [start + i * bin_s for i in range(bins + 1)]
    kinds = [*KINDS, *sorted({kind for kind, _, _ in spans} - set(KINDS))]
    series: dict[str, list[float]] = {kind: [] for kind in kinds}
    cpu: dict[str, list[float | None]] = {"user": [], "nice": [], "system": []}
    for lo, hi in itertools.pairwise(edges):
        for kind in kinds:
            overlap = sum(max(0.0, min(e, hi) - max(s, lo)) for k, s, e in spans if k == kind)
            series[kind].append(round(overlap / bin_s, 2))
        for name, value in zip(cpu, _busy_cores(samples, lo, hi, cores), strict=True):
            cpu[name].append(value)
    totals = {kind: round(sum(e - s for k, s, e in spans if k == kind), 3) for kind in kinds}
    return {"bin_s": bin_s, "start_s": [round(e - start, 3) for e in edges[:-1]], "under_way": series,
            "cores_busy": cpu, "cores": cores, "seconds": totals}


def plot(timeline: dict, path: pathlib.Path, title: str) -> pathlib.Path:
    """Two panels over time: what was under way, and the cores busy."""
    from megatron_video.plots import plt, save_figure

    # Each value holds for its whole bin: the last one is drawn to the run's end too.
    t = [*timeline["start_s"], timeline["start_s"][-1] + timeline["bin_s"]]

    def held(values: list[float | None]) -> list[float]:
        return [float("nan") if v is None else v for v in [*values, values[-1]]]

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for kind in KINDS:
        top.step(t, held(timeline["under_way"][kind]), where="post", label=kind.replace("_", " "))
    top.set_ylabel("under way")
    top.legend(loc="upper right", fontsize=8)
    top.set_title(title)
    cpu = timeline["cores_busy"]
    bottom.stackplot(t, held(cpu["user"]), held(cpu["nice"]), held(cpu["system"]), step="post",
                     labels=["user (this process)", "nice (encoder pool)", "system"])
    bottom.axhline(timeline["cores"], color="k", linewidth=0.8)
    bottom.set_ylabel("cores busy")
    bottom.set_xlabel("seconds into the run")
    bottom.legend(loc="upper right", fontsize=8)
    return save_figure(fig, path)
