"""The local executor's video pool: on the NVDEC path at most `nvdec_sessions` video jobs run at
once, however many workers there are; elsewhere one per worker."""
import dataclasses
import threading
import time

from curator.executors import local
from curator.run import curate
from curator.stages.decode import DecodeStage
from curator.video.synthetic import write_test_video


def test_video_threads_stop_at_nvdec_sessions_only_on_the_gpu_path(make_config, tmp_path, monkeypatch):
    cfg = make_config(tmp_path, tmp_path / "out", workers=4, nvdec_sessions=2)
    assert local.video_threads(cfg) == 4  # CPU: PyAV decodes, one video per worker
    monkeypatch.setattr(local, "use_gpu", lambda device: True)
    assert local.video_threads(cfg) == 2
    assert local.video_threads(make_config(tmp_path, tmp_path / "out", workers=1, nvdec_sessions=2)) == 1


def test_the_nvdec_path_decodes_at_most_nvdec_sessions_videos_at_once(make_config, tmp_path, monkeypatch):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(6):
        write_test_video(inputs / f"v{i}.mp4", 96, 128, shots=1, frames_per_shot=60, seed=i)  # 2.5 s: one clip
    running, peak, lock = [0], [0], threading.Lock()
    decode_process = DecodeStage.process

    def counting_process(self, task):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            time.sleep(0.2)  # long enough for every free video thread to pick up a video meanwhile
            return decode_process(self, task)
        finally:
            with lock:
                running[0] -= 1

    # Only the pool size follows use_gpu here: the workers stay CPU workers, so every stage (decode,
    # the crop's OCR, the filters) still runs on the CPU.
    monkeypatch.setattr(local, "use_gpu", lambda device: True)
    gpu_contexts = local.job_contexts
    monkeypatch.setattr(local, "job_contexts",
                        lambda cfg: tuple(dataclasses.replace(ctx, device="cpu") for ctx in gpu_contexts(cfg)))
    monkeypatch.setattr(DecodeStage, "process", counting_process)
    summary = curate(make_config(inputs, tmp_path / "out", workers=4, nvdec_sessions=2, max_in_flight=6),
                     progress=False)
    assert summary.inputs_by_status == {"done": 6}
    assert peak[0] == 2


def test_run_jobs_takes_inputs_put_into_its_feed_while_it_runs(make_config, tmp_path):
    """A Ray pipeline actor keeps one executor running and puts each batch into its feed: inputs put
    while it runs are curated by the same run, each reported finished once, and the run ends only
    when the feed is closed and everything is done."""
    from curator.pipeline import build_stages

    inputs = tmp_path / "in"
    inputs.mkdir()
    sources = []
    for i in range(3):
        write_test_video(inputs / f"v{i}.mp4", 96, 128, shots=1, frames_per_shot=60, seed=i)
        sources.append(str(inputs / f"v{i}.mp4"))
    cfg = make_config(inputs, tmp_path / "out", workers=2)
    stages = build_stages(cfg)

    class Collect:
        inputs_finished = clips_written = 0

        def __init__(self):
            self.tasks = []

        def process(self, task):
            self.tasks.append(task)

    class Quiet:
        def update(self, inputs, clips):
            pass

    feed = local.SourceFeed(sources[:1], closed=False)
    finished = []

    def on_finished(source):
        finished.append(source)
        if len(finished) == 1:
            feed.put(sources[1:])  # the next batch, while the run is still going
        elif len(finished) == len(sources):
            feed.close()

    writer = Collect()
    local.setup_stages(cfg, stages)
    try:
        runner = threading.Thread(target=local.run_jobs, args=(cfg, feed, stages, writer, Quiet(), on_finished))
        runner.start()
        runner.join(timeout=120)
        assert not runner.is_alive()
    finally:
        for stage in stages:
            stage.teardown()
    assert sorted(finished) == sources  # each once
    assert {task.source for task in writer.tasks} == set(sources)
    assert all(task.ok for task in writer.tasks) and len(writer.tasks) == 3  # one clip each


def test_a_closed_empty_feed_ends_the_run_at_once():
    feed = local.SourceFeed(["a.mp4"])
    assert feed.take() == "a.mp4" and feed.take() is None and feed.wait() is False
