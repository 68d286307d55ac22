"""The curation benchmarks run end to end in --quick mode and write a well-formed result."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["decode_throughput", "curation_pipeline"])
def test_quick_benchmark_writes_result(name, tmp_path):
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), "--quick",
                          "--results-dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads((tmp_path / f"{name}.json").read_text())
    assert result["name"] == name and set(result) >= {"device", "metrics", "baseline", "ratio", "target"}
    if name == "decode_throughput":
        assert result["baseline"]["pyav_fps_360p"] > 0
    else:
        assert result["metrics"]["clips"] == 6 and 0 < result["ratio"] < 10
        assert result["metrics"]["cpu_ceiling_ratio"] > 0


def test_text_detection_benchmark_writes_result(tmp_path):
    """Both sides detect every clip; the shared detector ran them in at most one batch a clip."""
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "text_detection_threads.py"), "--quick",
                          "--results-dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads((tmp_path / "text_detection_threads.json").read_text())
    metrics, baseline = result["metrics"], result["baseline"]
    assert metrics["clips"] == 4 and 1 <= metrics["batches"] <= 4 and metrics["frame"] == [64, 128]
    assert metrics["clips_per_s"] > 0 and baseline["clips_per_s"] > 0 and result["ratio"] > 0


def test_curation_benchmark_takes_config_overrides_and_refuses_bad_keys(tmp_path):
    """`--set` reaches the pipeline's config and is recorded; a bad key fails before any input is written."""
    script = str(ROOT / "benchmarks" / "curation_pipeline.py")
    run = subprocess.run([sys.executable, script, "--quick", "--set", "decode_chunk_frames=16",
                          "--set", "nvdec_sessions=3", "--results-dir", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads((tmp_path / "curation_pipeline.json").read_text())
    assert result["metrics"]["overrides"] == {"decode_chunk_frames": 16, "nvdec_sessions": 3}
    bad = subprocess.run([sys.executable, script, "--quick", "--set", "nvdec_sessions=0",
                          "--results-dir", str(tmp_path / "bad")],
                         cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode != 0 and "nvdec_sessions" in bad.stderr and not (tmp_path / "bad").exists()


def test_curation_benchmark_stops_before_a_stage_and_names_the_result_after_it(tmp_path):
    """`--stop-before encode` runs every stage up to encode, writes no clip, and writes its own result
    file, so an ablation never overwrites the whole pipeline's figure."""
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "curation_pipeline.py"), "--quick",
                          "--stop-before", "encode", "--results-dir", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    assert not (tmp_path / "curation_pipeline.json").exists()
    result = json.loads((tmp_path / "curation_pipeline_stop_before_encode.json").read_text())
    metrics = result["metrics"]
    assert metrics["stop_before"] == "encode" and metrics["clips"] == 0
    # The stages before encode ran: their timings are there, and encode's own work is not.
    assert metrics["stage_seconds"]["crop"] > 0 and "encode_process_cpu" not in metrics["stage_seconds"]
    assert 0 < result["ratio"] < 10


def test_curation_benchmark_compares_filters_on_and_off(tmp_path):
    """`--compare-filters`: the same inputs with the filters and without, into a result of its own
    whose ratio is filter-less seconds over filtered seconds, every filter's time recorded; a dotted
    `--set` key reaches the filters' section."""
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "curation_pipeline.py"), "--quick",
                          "--compare-filters", "--repeats", "1", "--set", "filters.max_faces=3",
                          "--results-dir", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads((tmp_path / "curation_pipeline_filters.json").read_text())
    assert result["target"] == 0.8 and 0 < result["ratio"] < 10
    assert result["metrics"]["clips"] == result["baseline"]["clips"] == 6
    assert {"colour", "stillness", "duplicates", "motion", "faces", "text"} <= set(result["metrics"]["stage_seconds"])
    assert "motion" not in result["baseline"]["stage_seconds"]
    assert result["metrics"]["filters"] == {"ocr_frames": 1, "max_faces": 3}  # --quick's, then --set's


def test_host_gpus_counts_the_gpus_hidden_from_this_process(tmp_path, monkeypatch):
    """A benchmark run on one GPU of a two-GPU host (the other hidden by CUDA_VISIBLE_DEVICES) says
    so in its device label: nvidia-smi lists every GPU of the host."""
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks.common import host_gpus

    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-a)'\necho 'GPU 1: NVIDIA H200 (UUID: GPU-b)'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    assert host_gpus(visible=1) == 2
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert host_gpus(visible=1) == 1  # no nvidia-smi: what the process sees


def test_a_result_names_a_tree_that_differs_from_its_commit_dirty(tmp_path, monkeypatch):
    """Results are labelled with the code they ran; a copy whose files are newer than its history
    (the GPU machine's) must not pass for that history's commit."""
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks import common

    monkeypatch.delenv("MVIDEO_COMMIT", raising=False)
    repo = tmp_path / "repo"
    (repo / "results").mkdir(parents=True)
    (repo / "code.py").write_text("x = 1\n")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    for command in (["init", "-q"], ["add", "code.py"], ["commit", "-q", "-m", "one"]):
        subprocess.run(["git", *command], cwd=repo, check=True, env=env)
    monkeypatch.setattr(common, "RESULTS_DIR", repo / "results")
    clean = common._commit()
    assert len(clean) == 7 and not clean.endswith("-dirty")
    (repo / "code.py").write_text("x = 2\n")
    assert common._commit() == f"{clean}-dirty"
    monkeypatch.setenv("MVIDEO_COMMIT", "abc1234")
    assert common._commit() == "abc1234"


def test_only_the_whole_local_pipeline_writes_the_tables_row(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks.curation_pipeline import result_name

    assert result_name("local", None) == "curation_pipeline"
    assert result_name("ray", None) == "curation_pipeline_ray_pipeline_actors"
    assert result_name("local", "encode") == "curation_pipeline_stop_before_encode"
    assert result_name("ray", "shots") == "curation_pipeline_ray_pipeline_actors_stop_before_shots"
    assert result_name("local", None, "mixed") == "curation_pipeline_mixed_lengths"
    assert result_name("local", None, source="1080p") == "curation_pipeline_1080p"
    assert result_name("local", None, "mixed", source="1080p") == "curation_pipeline_mixed_lengths_1080p"
    assert result_name("local", None, "mixed", given_inputs=True) == "curation_pipeline_given_inputs"


def test_cpu_ceiling_is_the_ratio_with_every_core_busy_all_run(monkeypatch):
    """48 CPU-seconds on 16 cores take at least 3 s: against a 2.4 s bare decode, 0.8 at best."""
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks.curation_pipeline import cpu_ceiling_ratio

    assert cpu_ceiling_ratio(2.4, {"driver": 16.0, "encoder_processes": 32.0}, cores=16) == 0.8
    assert cpu_ceiling_ratio(2.4, {"driver": 16.0, "encoder_processes": 32.0}, cores=32) == 1.6
    assert cpu_ceiling_ratio(2.4, {"driver": 0.0, "encoder_processes": 0.0}, cores=16) is None


def test_curation_benchmark_times_the_videos_it_is_given(tmp_path):
    from curator.video.synthetic import write_test_video

    inputs = tmp_path / "mine"
    (inputs / "more").mkdir(parents=True)
    for i, name in enumerate(("v0.mp4", "v1.mp4", "more/v2.mp4")):
        write_test_video(inputs / name, 180, 320, shots=2, frames_per_shot=60, seed=i)
    (inputs / "notes.txt").write_text("not a video\n")  # listed as the pipeline lists: by extension
    script = str(ROOT / "benchmarks" / "curation_pipeline.py")
    run = subprocess.run([sys.executable, script, "--quick", "--inputs", str(inputs), "--repeats", "1",
                          "--results-dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    metrics = json.loads((tmp_path / "curation_pipeline_given_inputs.json").read_text())["metrics"]
    assert metrics["videos"] == 3 and metrics["inputs"] == str(inputs) and metrics["clips"] == 6
    refused = subprocess.run([sys.executable, script, "--quick", "--inputs", str(tmp_path / "nowhere")], cwd=ROOT,
                             capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode == 2 and "not a directory" in refused.stderr


def test_mixed_lengths_keep_the_frames_of_uniform_ones(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks.curation_pipeline import shots_in_video

    mixed = [shots_in_video(i, "mixed") for i in range(48)]
    assert sorted(set(mixed)) == [2, 3, 4] and sum(mixed) == sum(shots_in_video(i, "uniform") for i in range(48))


def test_ray_runs_default_to_a_worker_per_core_of_the_whole_machine(monkeypatch):
    """The local executor decodes on one GPU, so it gets that GPU's share of the cores; the Ray
    runner's actors spread over every GPU of the machine (on a 2-GPU host it had half of them)."""
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks import curation_pipeline

    monkeypatch.setattr(curation_pipeline, "visible_gpus", lambda: 2)
    monkeypatch.setattr(curation_pipeline, "available_cores", lambda: 32)
    assert curation_pipeline.default_workers("local") == 16
    assert curation_pipeline.default_workers("ray") == 32
    assert curation_pipeline.default_workers("parts", parts=2) == 16


def test_workers_follow_the_cores_this_process_may_run_on(monkeypatch):
    """Under `taskset -c 0-15` on a 32-core host, a one-GPU run gets 16 workers, not 32 (os.cpu_count
    counts the whole machine, and a pinned run sized from it put 32 workers on 16 cores)."""
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks import curation_pipeline

    monkeypatch.setattr(curation_pipeline, "visible_gpus", lambda: 1)
    monkeypatch.setattr(curation_pipeline.os, "cpu_count", lambda: 32)
    monkeypatch.setattr(curation_pipeline.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert curation_pipeline.default_workers("local") == 16


def test_timeline_counts_what_is_under_way_and_the_busy_cores_per_bin():
    from benchmarks.timeline import summarize

    spans = [("video_job", 0.0, 0.5), ("decode_call", 0.1, 0.2), ("encoder_call", 0.25, 0.375),
             ("encoder_call", 0.25, 0.5), ("probe", 0.0, 0.05)]
    # /proc/stat ticks (user nice system idle iowait irq softirq) at 0, 0.25 and 0.5 s on 4 cores:
    # first bin 1 user + 1 idle core, second 2 niced + 1 system + 1 idle.
    samples = [(0.0, [0, 0, 0, 0, 0, 0, 0]), (0.25, [10, 0, 0, 10, 0, 0, 0]), (0.5, [10, 20, 5, 20, 0, 0, 5])]
    timeline = summarize(spans, samples, start=0.0, end=0.5, bin_s=0.25, cores=4)
    assert timeline["start_s"] == [0.0, 0.25]
    assert timeline["under_way"]["video_job"] == [1.0, 1.0]
    assert timeline["under_way"]["decode_call"] == [0.4, 0.0]
    assert timeline["under_way"]["encoder_call"] == [0.0, 1.5]
    assert timeline["under_way"]["probe"] == [0.2, 0.0]  # a stage's own spans come after the main kinds
    assert timeline["under_way"]["clip_job"] == [0.0, 0.0]
    assert timeline["cores_busy"] == {"user": [2.0, 0.0], "nice": [0.0, 2.0], "system": [0.0, 1.0]}
    assert timeline["seconds"] == {"video_job": 0.5, "decode_call": 0.1, "clip_job": 0.0, "encoder_call": 0.375,
                                   "probe": 0.05}


def test_curation_benchmark_draws_the_first_runs_timeline(tmp_path):
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "curation_pipeline.py"), "--quick", "--timeline",
                          "--results-dir", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads((tmp_path / "curation_pipeline.json").read_text())
    seconds = result["metrics"]["timeline"]["seconds"]
    # Two videos, their clips and encodes, all inside the run (CPU path: no NVDEC calls), and every
    # stage's calls within the jobs that make them (totals are rounded to 1 ms each).
    assert seconds["video_job"] > 0 and seconds["encoder_call"] > 0
    assert seconds["clip_job"] + 0.002 >= seconds["encode"] + 0.001 >= seconds["encoder_call"]
    assert seconds["video_job"] + 0.003 >= seconds["probe"] + seconds["decode"] + seconds["shots"] > 0
    assert sum(seconds.values()) < 16 * result["metrics"]["pipeline_seconds_all"][0]
    assert (tmp_path / "curation_pipeline_timeline.png").stat().st_size > 10_000
    # Ray's actors are other processes, whose spans this process cannot record: refused up front.
    ray = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "curation_pipeline.py"), "--quick", "--timeline",
                          "--executor", "ray", "--results-dir", str(tmp_path / "ray")],
                         cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert ray.returncode != 0 and "local executor only" in ray.stderr and not (tmp_path / "ray").exists()


def test_parts_run_one_process_per_part_over_all_the_inputs(tmp_path):
    """`--executor parts` curates the same clips as one process (6 from the quick run's two videos),
    split over two part processes that both report, and decodes the same frames for its baseline."""
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "curation_pipeline.py"), "--quick",
                          "--executor", "parts", "--parts", "2", "--repeats", "1", "--results-dir", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=180, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads((tmp_path / "curation_pipeline_parts.json").read_text())
    metrics = result["metrics"]
    assert metrics["clips"] == 6 and metrics["parts"] == 2 and metrics["workers"] == 1
    assert len(metrics["part_seconds"]) == 2 and all(s > 0 for s in metrics["part_seconds"])
    assert max(metrics["part_seconds"]) <= metrics["pipeline_seconds"]  # the clock stops at the last part
    assert result["baseline"]["decode_frames"] == 2 * 3 * 60 and 0 < result["ratio"] < 10
    refused = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "curation_pipeline.py"), "--quick",
                              "--parts", "2", "--results-dir", str(tmp_path / "refused")],
                             cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode != 0 and "--executor parts" in refused.stderr

