"""curation_pipeline: whole-pipeline clips/s as a fraction of bare-decode clips/s, same inputs.

The pipeline (probe, decode, two-pass shots, clip length, crop, resize, encode, shard writer; the
local executor with `--workers` threads; NVDEC/NVENC where a GPU is usable) curates synthetic
H.264 videos with hard cuts. The baseline decodes every frame of the same files with the same
decoder, nothing else, on as many threads as the pipeline decodes at once (`--workers`, and on the
GPU at most `nvdec_sessions`: more concurrent NVDEC sessions make bare decode slower, not
faster). Both are expressed in the pipeline's clips, so
ratio = pipeline clips/s / decode clips/s = decode seconds / pipeline seconds (target >= 0.7).

It measures steady-state throughput, as on a real input set of thousands of videos: by default
three videos per worker and one worker per CPU core of the GPU's share of the machine (of the whole
machine with `--executor ray`, whose actors spread over every GPU), with as many videos open at
once as two per worker (the gpu_node recipe's ratio). With only as many videos as
workers, every decode would start at once and every encode would wait for them: the result would
be one batch's latency, not the throughput the stages reach when they overlap.

Both sides are timed warm: one-time start-up (imports, the TransNetV2 weights, the CUDA context and
NVDEC initialisation, the first file reads) is paid by an untimed warm-up first: the pipeline curates
the first video into a scratch output, and the baseline decodes it once. The timed pipeline then
starts from an empty output directory, so ledger, shard and catalog writes are all counted.
Each side is timed `--repeats` times (3 with --quick, whose runs last a fraction of a second) and
the medians are compared. Each side's CPU time is recorded too, this process's and the encoder
processes' (as they report it) apart: it tells a pipeline short of cores from one waiting on the
GPU or the GIL, and gives `metrics.cpu_ceiling_ratio`, the best ratio that much CPU time allows
on the cores the process may use. `--executor ray` times the Ray runner instead (the gpu_node recipe's choice),
whose actors' CPU time this process cannot see, into `curation_pipeline_ray.json`, beside the
local executor's row.

`--executor parts` times one local-executor process per GPU instead, each on its part of the inputs
and its share of the cores, as the gpu_node recipe runs them (benchmarks/part_processes.py): both
sides run in every part at once, into `curation_pipeline_parts.json`.

`--timeline` records the first timed pipeline run as a timeline (benchmarks/timeline.py): per
0.25 s (finer for runs under 5 s), the video jobs, NVDEC calls, clip jobs, encoder calls and
each stage's calls under way and the cores busy, in the JSON's `metrics.timeline`, drawn beside it
as `<result>_timeline.png`. The local executor only: Ray's actors are other processes.

`--stop-before STAGE` times the pipeline up to that stage: the stage is swapped for one that
rejects every task, so neither it nor any stage after it does work, and the ratio is that of the
stages before it (`curation_pipeline_stop_before_<stage>.json`, clips=0 by design). Run it next to
the whole pipeline to see what each stage adds.

`--source 1080p` makes the synthetic videos 1920x1080 instead of 1280x720
(`curation_pipeline_1080p.json`): decoding costs more per frame, the clips' own stages the same.

`--inputs DIR` times the videos in DIR instead (`curation_pipeline_given_inputs.json`): your own
footage, or one set of videos for several runs to compare.

`--compare-filters` times the pipeline with its filters (curator/filters: colour, stillness,
perceptual hashes, optical flow, faces, OCR, and DOVER where `filters.aesthetic_model` names one)
against the same pipeline with none (`filters.run=[]`), alternating the two on the same inputs,
into `curation_pipeline_filters.json`: ratio = filter-less seconds / filtered seconds = clips/s
with filters / clips/s without (target >= 0.8; both write every clip, the filters only score).

`--lengths mixed` makes the videos 2, 3 and 4 shots long in turn instead of 3 each (the same frames
in all, `curation_pipeline_mixed_lengths.json`): with one length, the decoding threads run in step
(a `--timeline` shows their NVDEC calls swing between ~2 and ~8 under way), which real footage of
many lengths does not.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import resource
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from benchmarks.common import write_result
from benchmarks.curation_workload import bare_decode, input_videos, warm_up
from benchmarks.timeline import CpuSampler, plot, summarize
from curator import tracing
from curator.metrics import RunMetrics
from curator.video.synthetic import write_test_video
from megatron_video.cpu_cores import available_cores


def visible_gpus() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count()


def cores_per_gpu() -> int:
    """One GPU's share of the cores this process may run on (its CPU affinity: `taskset` narrows it)."""
    return max(1, available_cores() // max(1, visible_gpus()))


def shots_in_video(index: int, lengths: str) -> int:
    """3 shots each, or 2, 3 and 4 in turn: the same frames in all, but videos of one length keep
    the decoding threads in step (each probes, decodes and detects shots when the others do)."""
    return 3 if lengths == "uniform" else 2 + index % 3


def default_workers(executor: str, parts: int = 1) -> int:
    """One per core: of the GPU's share (the local executor decodes on one GPU), of the whole
    machine (the Ray runner's actors spread over every GPU), or of one part's share (parts)."""
    if executor == "ray":
        return available_cores()
    return max(1, available_cores() // parts) if executor == "parts" else cores_per_gpu()


def cpu_seconds() -> float:
    """CPU time used so far by this process (the encoder processes report theirs through the
    pipeline's stage timings: they are the fork server's children, not this process's)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_since(start: float) -> float:
    return round(cpu_seconds() - start, 1)


def cpu_ceiling_ratio(decode_seconds: float, cpu: dict[str, float], cores: int) -> float | None:
    """The best ratio `cores` could give with every one of them busy through the whole run: the
    run's CPU time (this process's and the encoders') cannot be done in less than its share of the
    cores. A measured ratio near it means the pipeline is short of cores, far below it that the
    cores wait on something else (the GIL, the GPU, the decoding threads' pace)."""
    total = sum(cpu.values())
    return round(decode_seconds * cores / total, 3) if total > 0 else None


def _key_value(item: str) -> tuple[str, object]:
    import yaml

    key, sep, value = item.partition("=")
    if not sep or not key:
        raise SystemExit(f"--set wants KEY=VALUE, got {item!r}")
    return key, yaml.safe_load(value)


def nested(overrides: dict) -> dict:
    """Dotted keys (`filters.ocr_frames`) as nested mappings, as the config's sections take them."""
    out: dict = {}
    for key, value in overrides.items():
        *sections, leaf = key.split(".")
        target = out
        for section in sections:
            target = target.setdefault(section, {})
        target[leaf] = value
    return out


STOPPABLE = ("decode", "shots", "crop", "resize", "encode")  # probe feeds decode; clip_length fans out


def stopped_stages(cfg, stage_name: str) -> list:
    """The pipeline's stages with `stage_name` swapped for one that rejects every task."""
    from curator.pipeline import build_stages
    from curator.stages.base import Stage
    from curator.tasks import SKIPPED

    class StopStage(Stage):
        name = stage_name

        def process(self, task):
            task.reject(SKIPPED, f"benchmark stops before {stage_name}")
            return [task]

    return [StopStage() if stage.name == stage_name else stage for stage in build_stages(cfg)]


SOURCE_SIZES = {"720p": (720, 1280), "1080p": (1080, 1920)}


def result_name(executor: str, stop_before: str | None, lengths: str = "uniform", source: str = "720p",
                given_inputs: bool = False) -> str:
    """The result file's name: the table's row is the whole pipeline on the local executor over
    synthetic 720p videos of one length, and no other run (the Ray runner, a pipeline cut short,
    mixed lengths, 1080p sources, videos of the user's) may overwrite it. The Ray runner's results
    keep the name they had when its pipeline actors were one of several models."""
    if given_inputs:
        lengths, source = "uniform", "720p"  # not what made the videos: they came with --inputs
    name = "curation_pipeline" if executor == "local" else f"curation_pipeline_{executor}"
    if executor == "ray":
        name = f"{name}_pipeline_actors"
    if lengths != "uniform":
        name = f"{name}_{lengths}_lengths"
    if source != "720p":
        name = f"{name}_{source}"
    if given_inputs:
        name = f"{name}_given_inputs"
    return f"{name}_stop_before_{stop_before}" if stop_before else name


def time_in_process(args: argparse.Namespace, run_rules: dict, inputs: pathlib.Path, tmp: pathlib.Path,
                    repeats: int) -> dict:
    """The pipeline (local executor or Ray runner) in this process, then bare decode of the same
    files on as many threads as the pipeline decodes at once; each side warm, `repeats` times."""
    from curator.config import CurateConfig
    from curator.run import curate

    sources = input_videos(inputs, run_rules)
    warm_up(run_rules, sources[0], tmp)
    runs, pipeline_cpu = [], []
    timeline = None
    for r in range(repeats):
        cfg = CurateConfig(input=str(inputs), output=str(tmp / f"out{r}"), **run_rules)
        cpu = cpu_seconds()
        stages = stopped_stages(cfg, args.stop_before) if args.stop_before else None
        if args.timeline and r == 0:
            with tracing.recording() as spans, CpuSampler() as sampler:
                start = time.perf_counter()
                runs.append(curate(cfg, progress=False, stages=stages))
                end = time.perf_counter()
            # 0.25 s bins on the GPU machine's runs of seconds; finer for --quick's fraction of one.
            timeline = summarize(spans, sampler.samples, start, end, bin_s=max(0.05, min(0.25, (end - start) / 20)))
        else:
            runs.append(curate(cfg, progress=False, stages=stages))
        pipeline_cpu.append(cpu_since(cpu))
    median = sorted(range(repeats), key=lambda r: runs[r].wall_seconds)[repeats // 2]
    summary = runs[median]

    timings = []
    for _ in range(repeats):
        start, cpu = time.perf_counter(), cpu_seconds()
        frames = bare_decode(cfg, sources)
        timings.append((time.perf_counter() - start, cpu_since(cpu)))
    decode_seconds, decode_cpu = sorted(timings)[repeats // 2]
    return {"clips": summary.clips_written, "pipeline_seconds_all": [r.wall_seconds for r in runs],
            "pipeline_seconds": round(summary.wall_seconds, 3), "stage_seconds": summary.metrics.seconds(),
            "cpu_seconds": {"driver": pipeline_cpu[median],
                            "encoder_processes": round(summary.metrics.encoder_process_cpu, 3)},
            "decode_seconds": round(decode_seconds, 3), "decode_frames": frames, "decode_cpu_seconds": decode_cpu,
            "timeline": timeline}


def time_filters(args: argparse.Namespace, run_rules: dict, inputs: pathlib.Path, tmp: pathlib.Path,
                 repeats: int) -> dict:
    """`--compare-filters`: the pipeline with the run's filters and with none, alternately on the
    same inputs, each warm, `repeats` times; medians of each side."""
    from curator.config import CurateConfig
    from curator.run import curate

    warm_up(run_rules, input_videos(inputs, run_rules)[0], tmp)
    sides = {"filters": run_rules, "no_filters": {**run_rules, "filters": {**run_rules.get("filters", {}), "run": []}}}
    runs: dict[str, list] = {side: [] for side in sides}
    for r in range(repeats):
        for side, rules in sides.items():
            runs[side].append(curate(CurateConfig(input=str(inputs), output=str(tmp / f"{side}{r}"), **rules),
                                     progress=False))
    # A side that lost inputs the other curated times less work: its ratio would mean nothing.
    lost = {side: [run.not_curated_by_reason for run in found] for side, found in runs.items()}
    if any(reasons != lost["no_filters"][0] for found in lost.values() for reasons in found):
        raise SystemExit(f"--compare-filters: the sides did not curate the same inputs (inputs not curated, "
                         f"by reason, run by run: {lost}); the ledgers in their outputs say why")
    median = {side: sorted(found, key=lambda run: run.wall_seconds)[repeats // 2] for side, found in runs.items()}
    return {side: {"clips": run.clips_written, "seconds": round(run.wall_seconds, 3),
                   "seconds_all": [x.wall_seconds for x in runs[side]], "stage_seconds": run.metrics.seconds(),
                   "clips_rejected_by_reason": run.clips_rejected_by_reason}
            for side, run in median.items()}


def compare_filters(args: argparse.Namespace, run_rules: dict, inputs: pathlib.Path, tmp: pathlib.Path,
                    repeats: int, videos: int) -> pathlib.Path:
    timed = time_filters(args, run_rules, inputs, tmp, repeats)
    on, off = timed["filters"], timed["no_filters"]
    metrics = {"videos": videos, "executor": args.executor, "workers": args.workers, "repeats": repeats,
               "clips": on["clips"], "seconds": on["seconds"], "seconds_all": on["seconds_all"],
               "clips_per_s": round(on["clips"] / on["seconds"], 3), "stage_seconds": on["stage_seconds"],
               "clips_rejected_by_reason": on["clips_rejected_by_reason"], "cores": available_cores(),
               "filters": run_rules.get("filters", {})}
    baseline = {"clips": off["clips"], "seconds": off["seconds"], "seconds_all": off["seconds_all"],
                "clips_per_s": round(off["clips"] / off["seconds"], 3), "stage_seconds": off["stage_seconds"]}
    ratio = off["seconds"] / on["seconds"] if on["clips"] == off["clips"] and on["clips"] else 0.0
    return write_result("curation_pipeline_filters", metrics, baseline, ratio, target=0.8, results_dir=args.results_dir)


def time_parts(args: argparse.Namespace, run_rules: dict, inputs: pathlib.Path, tmp: pathlib.Path,
               repeats: int) -> dict:
    """`--executor parts`: every part's pipeline at once, then every part's bare decode at once
    (benchmarks/part_processes.py); seconds are to the last part's finish, counts are summed."""
    from benchmarks.part_processes import Parts

    spec = {"rules": run_rules, "input": str(inputs), "work": str(tmp)}
    parts = Parts(spec, args.parts, gpus=visible_gpus())
    try:
        pipeline = [parts.phase("pipeline", r) for r in range(repeats)]
        decode = [parts.phase("decode", r) for r in range(repeats)]
    finally:
        parts.close()
    wall, reports = sorted(pipeline, key=lambda run: run[0])[repeats // 2]
    decode_wall, decode_reports = sorted(decode, key=lambda run: run[0])[repeats // 2]
    metrics = RunMetrics()
    for report in reports:
        metrics.add(RunMetrics.from_dict(report["metrics"]))
    return {"clips": sum(r["clips"] for r in reports), "pipeline_seconds_all": [round(w, 3) for w, _ in pipeline],
            "pipeline_seconds": round(wall, 3), "stage_seconds": metrics.seconds(),
            "cpu_seconds": {"driver": round(sum(r["cpu"] for r in reports), 1),
                            "encoder_processes": round(metrics.encoder_process_cpu, 1)},
            "part_seconds": [r["wall"] for r in reports],
            "decode_seconds": round(decode_wall, 3),
            "decode_frames": sum(r["frames"] for r in decode_reports),
            "decode_cpu_seconds": round(sum(r["cpu"] for r in decode_reports), 1)}


def main(argv: list[str] | None = None) -> pathlib.Path:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="two small videos and small clips (CPU smoke test)")
    parser.add_argument("--workers", type=int, default=None, help="default: one per core of the GPU's share "
                        "of the machine (local), of the whole machine (ray, whose actors use every GPU)")
    parser.add_argument("--videos", type=int, default=None, help="default: 3 per worker (of every part)")
    parser.add_argument("--executor", choices=("local", "ray", "parts"), default="local",
                        help="parts: one local-executor process per GPU (see benchmarks/part_processes.py)")
    parser.add_argument("--parts", type=int, default=None, help="processes with --executor parts (default: "
                        "one per visible GPU, at least one); --workers is then per part")
    parser.add_argument("--preset", default=None, help="curate.preset (libx264 speed/size trade-off; default: "
                        "the config's)")
    parser.add_argument("--encode-processes", type=int, default=-1, help="curate.encode_processes (-1: automatic)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any other curate config key for the pipeline runs, e.g. nvdec_sessions=6, "
                        "decode_chunk_frames=128 or filters.ocr_frames=1 (YAML values; repeatable)")
    parser.add_argument("--lengths", choices=("uniform", "mixed"), default="uniform",
                        help="every video 3 shots long, or 2, 3 and 4 in turn (same frames in all; see "
                        "the module docstring)")
    parser.add_argument("--source", choices=tuple(SOURCE_SIZES), default="720p",
                        help="the synthetic videos' resolution (the clips are 352x640 either way)")
    parser.add_argument("--inputs", type=pathlib.Path, default=None,
                        help="time the videos in this directory instead of synthetic ones (your own footage, "
                             "or one set for several runs to compare); --videos, --source and --lengths are unused")
    parser.add_argument("--stop-before", choices=STOPPABLE, default=None,
                        help="time only the stages before this one (see the module docstring)")
    parser.add_argument("--timeline", action="store_true", help="record the first timed run's timeline "
                        "(see the module docstring)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per side, medians compared "
                        "(default: 3 with --quick, else 1)")
    parser.add_argument("--compare-filters", action="store_true", help="the pipeline with its filters against "
                        "the same pipeline without (see the module docstring)")
    parser.add_argument("--results-dir", type=pathlib.Path, default=None)
    args = parser.parse_args(argv)
    if args.compare_filters and (args.executor == "parts" or args.stop_before or args.timeline):
        parser.error("--compare-filters times whole runs in this process: not with --executor parts, "
                     "--stop-before or --timeline")
    if args.parts is None:
        args.parts = max(1, visible_gpus()) if args.executor == "parts" else 1
    if args.parts > 1 and args.executor != "parts":
        parser.error("--parts is for --executor parts")
    if args.workers is None:
        args.workers = default_workers(args.executor, args.parts)
    if args.timeline and args.executor != "local":
        parser.error("--timeline records this process's threads: it times the local executor only")
    if args.inputs is not None and not args.inputs.is_dir():
        parser.error(f"--inputs {args.inputs}: not a directory")
    if args.stop_before and args.executor == "parts":
        parser.error("--stop-before swaps a stage in this process: not with --executor parts")
    try:
        import av  # noqa: F401
    except ImportError:
        metrics = {"pyav_available": False, "reason": "PyAV is missing: probe and the CPU path need it"}
        return write_result("curation_pipeline", metrics, {}, 0.0, target=0.7, results_dir=args.results_dir)

    from curator.config import CurateConfig
    from curator.executors.local import video_threads
    from curator.video.backend import use_gpu

    if args.quick:
        videos, (height, width), seconds_per_shot = 2, (180, 320), 2.5
        clip_rules = {"height": 64, "width": 112, "fps": 12.0, "min_seconds": 2.0, "max_seconds": 10.0,
                      "min_frames": 24, "filters": {"ocr_frames": 1}}
    else:
        videos, seconds_per_shot = args.videos or 3 * args.workers * args.parts, 5.0
        height, width = SOURCE_SIZES[args.source]
        clip_rules = {}
    overrides = dict(_key_value(item) for item in args.set)
    run_rules = {"workers": args.workers, "max_in_flight": 2 * args.workers,
                 "executor": "local" if args.executor == "parts" else args.executor,
                 "encode_processes": args.encode_processes, **clip_rules}
    for key, value in nested(overrides).items():  # a section's keys join the rules' own (--quick's filters)
        run_rules[key] = {**run_rules.get(key, {}), **value} if isinstance(value, dict) else value
    if args.preset:
        run_rules["preset"] = args.preset
    checked = CurateConfig(**run_rules)  # a bad key or value fails here, naming it, before any input is written
    with tempfile.TemporaryDirectory() as tmp:
        if args.inputs:
            inputs = args.inputs
            videos = len(input_videos(inputs, run_rules))
        else:
            inputs = pathlib.Path(tmp) / "inputs"
            inputs.mkdir()
            with ThreadPoolExecutor(os.cpu_count()) as pool:  # inputs only: not timed
                list(pool.map(lambda i: write_test_video(inputs / f"video{i:03d}.mp4", height, width,
                                                         shots=shots_in_video(i, args.lengths),
                                                         frames_per_shot=int(seconds_per_shot * 24), seed=i),
                              range(videos)))
            # Written back now, not by the kernel during the timed runs (seen on the H200 machine: the
            # first runs after writing 192 videos were the slowest of their call, on either code).
            os.sync()
        repeats = args.repeats or (3 if args.quick else 1)
        if args.compare_filters:
            return compare_filters(args, run_rules, inputs, pathlib.Path(tmp), repeats, videos)
        if args.executor == "parts":
            timed = time_parts(args, run_rules, inputs, pathlib.Path(tmp), repeats)
        else:
            timed = time_in_process(args, run_rules, inputs, pathlib.Path(tmp), repeats)
    clips = timed["clips"]
    metrics = {"clips": clips, "videos": videos, "executor": args.executor,
               "inputs": str(args.inputs) if args.inputs else f"synthetic {width}x{height}",
               "workers": args.workers, "max_in_flight": checked.max_in_flight,
               "encode_processes": checked.encode_processes, "encoder_priority": checked.encoder_priority,
               "preset": checked.preset, "overrides": overrides,
               "repeats": repeats, "pipeline_seconds_all": timed["pipeline_seconds_all"],
               "gpu": use_gpu(checked.device),
               "pipeline_seconds": timed["pipeline_seconds"],
               "pipeline_clips_per_s": round(clips / timed["pipeline_seconds"], 3),
               "stage_seconds": timed["stage_seconds"], "cpu_seconds": timed["cpu_seconds"],
               "cores": available_cores(), "stop_before": args.stop_before, "lengths": args.lengths}
    if args.executor == "parts":
        metrics.update(parts=args.parts, part_seconds=timed["part_seconds"])
    decode_seconds = timed["decode_seconds"]
    # Every part decodes on as many threads as its pipeline does.
    baseline = {"decode_seconds": decode_seconds, "decode_threads": video_threads(checked) * args.parts,
                "decode_frames": timed["decode_frames"], "decode_clips_per_s": round(clips / decode_seconds, 3),
                "cpu_seconds": timed["decode_cpu_seconds"]}
    if args.executor != "ray":  # Ray's actors spend CPU time this process cannot see
        metrics["cpu_ceiling_ratio"] = cpu_ceiling_ratio(decode_seconds, timed["cpu_seconds"], available_cores())
    timeline = timed.get("timeline")
    if timeline is not None:
        metrics["timeline"] = timeline
    ratio = decode_seconds / timed["pipeline_seconds"] if clips or args.stop_before else 0.0
    name = result_name(args.executor, args.stop_before, args.lengths, args.source,
                       given_inputs=args.inputs is not None)
    # The local executor decodes on one GPU; Ray's actors use every visible one, the parts one each.
    gpus = {"local": 1, "ray": visible_gpus(), "parts": min(args.parts, visible_gpus())}[args.executor]
    path = write_result(name, metrics, baseline, ratio, target=0.7, results_dir=args.results_dir, gpus=max(1, gpus))
    if timeline is not None:
        plot(timeline, path.with_name(f"{name}_timeline.png"),
             f"{name}: {videos} videos, {clips} clips, {timed['pipeline_seconds_all'][0]:.2f} s (first timed run)")
    return path


if __name__ == "__main__":
    if sys.argv[1:2] == ["--part-child"]:  # one process of --executor parts, started by time_parts
        from benchmarks.part_processes import child_main

        child_main(sys.argv[2])
    else:
        main()
