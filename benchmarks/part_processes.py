"""The curation benchmark's `--executor parts`: one local-executor process per GPU, each on its part of
the inputs and its share of the cores, as the gpu_node recipe and slurm/curate_parts.sbatch run it.

Each part is a child process (`curation_pipeline.py --part-child SPEC`) that pins itself to its
cores, sees only its GPU, warms up (imports, TransNetV2, CUDA context, NVDEC) on its first input
and then waits. The parent times phases across all parts at once: it tells every child to start a
phase and stops the clock when the last one reports. A phase is a whole pipeline run over the
part (`curate.part_index` of `curate.part_count`, into its own output) or the bare decode of the
same part's files, so both sides of the ratio run on every GPU together and contend for the same
host. Protocol lines on the child's stdout start with `PART `; logs go to stderr.
"""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time

from megatron_video.cpu_cores import core_shares

PREFIX = "PART "


class Parts:
    """The running children; `phase(name)` runs one phase on all of them and returns its wall
    seconds and each child's report."""

    def __init__(self, spec: dict, parts: int, gpus: int) -> None:
        script = pathlib.Path(__file__).with_name("curation_pipeline.py")
        shares = core_shares(sorted(os.sched_getaffinity(0)), parts)
        self.children = []
        for index in range(parts):
            env = dict(os.environ)
            if gpus:
                env["CUDA_VISIBLE_DEVICES"] = str(index % gpus)
            child_spec = {**spec, "index": index, "count": parts, "cores": shares[index]}
            self.children.append(subprocess.Popen([sys.executable, str(script), "--part-child", json.dumps(child_spec)],
                                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env))
        try:
            for child in self.children:
                self._report(child)  # "ready": warm-up done
        except BaseException:
            for child in self.children:
                child.kill()
            raise

    def _report(self, child: subprocess.Popen) -> dict:
        for line in child.stdout:
            if line.startswith(PREFIX):
                return json.loads(line[len(PREFIX):])
        raise RuntimeError(f"part process {child.args[-1][:80]}... exited with {child.wait()} before reporting")

    def phase(self, name: str, repeat: int) -> tuple[float, list[dict]]:
        start = time.perf_counter()
        for child in self.children:
            child.stdin.write(f"{name} {repeat}\n")
            child.stdin.flush()
        reports = [self._report(child) for child in self.children]
        return time.perf_counter() - start, reports

    def close(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.stdin.close()
                child.wait(timeout=60)


def child_main(spec_json: str) -> None:
    """One part: warm up, then run each phase the parent names on stdin, reporting on stdout."""
    spec = json.loads(spec_json)
    os.sched_setaffinity(0, spec["cores"])  # before the pipeline sizes its pools and encoders from it
    from benchmarks.curation_workload import bare_decode, input_videos, warm_up
    from curator.config import CurateConfig
    from curator.layout import part_share
    from curator.run import curate

    def report(**fields) -> None:
        print(PREFIX + json.dumps(fields), flush=True)

    index, count, rules = spec["index"], spec["count"], spec["rules"]
    root = pathlib.Path(spec["work"])
    sources = part_share(input_videos(pathlib.Path(spec["input"]), rules), index, count)
    cfg = warm_up(rules, sources[0], root / f"part_{index}")
    report(ready=True)
    for line in sys.stdin:
        name, repeat = line.split()
        cpu = time.process_time()
        if name == "pipeline":
            run_cfg = CurateConfig(input=spec["input"], output=str(root / f"out{repeat}"), part_index=index,
                                   part_count=count, **rules)
            summary = curate(run_cfg, progress=False)
            report(wall=summary.wall_seconds, clips=summary.clips_written, cpu=round(time.process_time() - cpu, 1),
                   metrics=summary.metrics.as_dict())
        else:
            start = time.perf_counter()
            frames = bare_decode(cfg, sources)
            report(wall=round(time.perf_counter() - start, 3), frames=frames, cpu=round(time.process_time() - cpu, 1))
