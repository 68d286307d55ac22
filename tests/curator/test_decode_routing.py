"""Per-input decode routing, NVDEC failures that fall back to the CPU, and runs that survive a crash
in native decoding code (the GPU curation issue). The GPU side is in test_gpu.py."""
import functools
import shutil

import numpy as np
import pytest

from curator.config import CurateConfig
from curator.ledger import Ledger
from curator.stages.decode import DecodeStage
from curator.stages.probe import ProbeStage
from curator.supervise import curate_supervised
from curator.tasks import VideoTask
from curator.video import backend, nvcodec
from megatron_video.testing.crash import segfault_on


@pytest.fixture(scope="module")
def zoo(format_zoo, tmp_path_factory):
    frames = np.random.default_rng(0).integers(0, 255, (30, 96, 128, 3), dtype=np.uint8)
    folder = tmp_path_factory.mktemp("zoo")
    return folder, format_zoo(folder, frames)


def probed(source: str, cfg: CurateConfig) -> VideoTask:
    (task,) = ProbeStage.from_config(cfg).process(VideoTask(source=source))
    return task


def test_the_probe_routes_each_input_to_the_decoder_that_takes_it(zoo, monkeypatch):
    folder, expected = zoo
    monkeypatch.setattr(backend, "use_gpu", lambda device: True)  # the GPU path's decision, on CPU
    cfg = CurateConfig(input=str(folder), device="cuda", height=64, width=112, min_input_side=32, min_seconds=1.0,
                       min_frames=8)
    for name, refusal in expected.items():
        task = probed(str(folder / name), cfg)
        assert task.ok, (name, task.reason)
        if refusal:
            assert task.meta.decoder == "pyav", name
            assert any(refusal in note for note in task.meta.notes), (name, task.meta.notes)
        else:
            assert task.meta.decoder == "nvdec" and task.meta.notes == [], (name, task.meta.notes)
    # The codec list is the config's: without hevc, it goes to the CPU with the reason.
    narrow = probed(str(folder / "hevc.mp4"), CurateConfig(**{**cfg.__dict__, "nvdec_codecs": ["h264"]}))
    assert narrow.meta.decoder == "pyav" and "hevc is not in curate.nvdec_codecs" in narrow.meta.notes[0]


def test_an_nvdec_failure_mid_video_decodes_the_input_on_the_cpu(zoo, monkeypatch):
    folder, _ = zoo
    cfg = CurateConfig(input=str(folder), device="cpu", height=64, width=112, min_seconds=1.0, min_frames=8)
    reference = DecodeStage.from_config(cfg).process(probed(str(folder / "h264.mp4"), cfg))[0]

    def failing_nvdec(source, chunk_frames, *args, **kwargs):
        from curator.video import pyav_io

        yield next(pyav_io.decode_chunks(source, 8))  # one good chunk, then the error NVDEC gave on vtest.avi
        raise RuntimeError("cuvidCreateVideoParser returned error 300")

    monkeypatch.setattr(nvcodec, "decode_chunks", failing_nvdec)
    task = probed(str(folder / "h264.mp4"), cfg)
    task.meta.decoder = "nvdec"
    (task,) = DecodeStage.from_config(cfg).process(task)
    assert task.ok and task.meta.decoder == "pyav"
    assert task.meta.notes == ["decoded on the CPU: NVDEC failed (cuvidCreateVideoParser returned error 300)"]
    assert task.meta.num_frames == reference.meta.num_frames == 30
    np.testing.assert_array_equal(task.analysis.small, reference.analysis.small)


def test_a_run_survives_a_crash_in_decoding_and_pins_it_on_the_input(footage, make_config, tmp_path):
    """The child process dies by SIGSEGV whenever `poison.mp4` is decoded. The supervisor starts it
    again; the inputs in flight at the first death are run alone, the poison dies alone once more
    and is recorded as failed after `max_attempts` deaths; every other input is curated."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for name in ("cup.mp4", "box.mp4"):
        shutil.copy(footage / name, inputs / name)
    shutil.copy(footage / "cup.mp4", inputs / "poison.mp4")
    cfg = make_config(inputs, tmp_path / "out", max_attempts=2)
    summary = curate_supervised(cfg, progress=False, prepare=functools.partial(segfault_on, "poison"))
    rows = {row["source"].rsplit("/", 1)[-1]: row for row in Ledger(summary.ledger_path).inputs()}
    assert rows["poison.mp4"]["status"] == "failed"
    assert rows["poison.mp4"]["reason"].startswith("crashed: the curating process died 2 time(s)")
    assert rows["cup.mp4"]["status"] == rows["box.mp4"]["status"] == "done"
    ledger = Ledger(summary.ledger_path)
    assert ledger.interrupted_starts() == {}
    ledger.close()
