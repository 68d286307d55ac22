"""GPU paths: NVDEC decode agrees with PyAV; NVENC writes a clip PyAV decodes. Run on the GPU machine."""
import io
import pathlib

import av
import numpy as np
import pytest

from curator.video import nvcodec, pyav_io
from curator.video.synthetic import write_test_video

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def h264_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("gpu") / "clip.mp4"
    write_test_video(path, 360, 640, shots=2, frames_per_shot=48)
    return str(path)


def test_nvdec_matches_pyav_frame_means(h264_file):
    cpu = np.concatenate([c.frames for c in pyav_io.decode_chunks(h264_file, 32)])
    chunks = list(nvcodec.decode_chunks(h264_file, 32))
    assert chunks[0].frames.is_cuda
    gpu = np.concatenate([c.frames.cpu().numpy() for c in chunks])
    assert gpu.shape == cpu.shape
    means_cpu = cpu.reshape(len(cpu), -1).mean(axis=1)
    means_gpu = gpu.reshape(len(gpu), -1).mean(axis=1)
    # Colour conversion differs slightly between NVDEC and swscale (~1-2 levels of 255).
    assert np.abs(means_cpu - means_gpu).max() < 4.0
    assert np.concatenate([c.indices for c in chunks]).tolist() == list(range(len(cpu)))


def test_encoder_choice_follows_the_hardware():
    from curator.video.backend import use_nvenc

    assert use_nvenc("cuda") == nvcodec.nvenc_available()
    assert use_nvenc("cpu") is False


def test_nvdec_decodes_selected_indices(h264_file):
    """A seek into the second shot, then only the wanted frames, matching PyAV's frames at those indices."""
    wanted = np.array([50, 51, 70, 90])
    chunks = list(nvcodec.decode_chunks(h264_file, 16, start_frame=50, end_frame=96, indices=wanted, size=(90, 160)))
    assert np.concatenate([c.indices for c in chunks]).tolist() == wanted.tolist()
    gpu = np.concatenate([c.frames.cpu().numpy() for c in chunks]).astype(np.float32)
    cpu = np.concatenate([c.frames for c in pyav_io.decode_chunks(h264_file, 96, size=(90, 160))])[wanted]
    assert gpu.shape == (4, 90, 160, 3)
    assert np.abs(gpu - cpu.astype(np.float32)).mean(axis=(1, 2, 3)).max() < 6.0


def test_nvenc_clip_decodes_with_pyav(h264_file):
    if not nvcodec.nvenc_available():
        pytest.skip("this GPU has no NVENC engine (H100/H200): the encode stage uses libx264 there")
    frames = np.concatenate([c.frames for c in pyav_io.decode_chunks(h264_file, 32, size=(352, 640))])[:81]
    data = nvcodec.encode_h264(frames, fps=24.0)
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert stream.codec_context.name == "h264" and abs(float(stream.average_rate) - 24.0) < 1e-3
    assert len(decoded) == 81 and decoded[0].shape == (352, 640, 3)
    assert abs(float(np.mean(decoded[40])) - float(np.mean(frames[40]))) < 6.0


def test_worker_streams_decode_in_parallel_like_one_thread(h264_file):
    """Each worker thread on its own CUDA stream: frames match a decode on the default stream."""
    from concurrent.futures import ThreadPoolExecutor

    from curator.video.backend import worker_stream
    from curator.video.frames import resize_batch

    def decode(_) -> tuple[np.ndarray, np.ndarray]:
        with worker_stream("cuda"):
            chunks = list(nvcodec.decode_chunks(h264_file, 16, size=(90, 160), keep=True, keep_size=(180, 320)))
            thumbs = np.concatenate([resize_batch(c.frames, (27, 48)) for c in chunks])
            return np.concatenate([c.kept.cpu().numpy() for c in chunks]), thumbs

    reference = decode(None)
    with ThreadPoolExecutor(4) as pool:
        for kept, thumbs in pool.map(decode, range(8)):
            assert np.array_equal(kept, reference[0]) and np.array_equal(thumbs, reference[1])


def test_i420_on_the_gpu_matches_the_cpu(h264_file):
    import torch

    from curator.video.frames import rgb_to_i420

    frames = np.concatenate([c.frames for c in pyav_io.decode_chunks(h264_file, 32, size=(352, 640))])[:32]
    on_gpu = rgb_to_i420(torch.from_numpy(frames).cuda()).cpu().numpy().astype(np.int16)
    on_cpu = rgb_to_i420(torch.from_numpy(frames)).numpy().astype(np.int16)
    # Same float32 arithmetic; a fused multiply-add on the GPU may move a value across .5.
    assert np.abs(on_gpu - on_cpu).max() <= 1


def test_a_reused_decoder_gives_what_a_fresh_one_gives(h264_file, tmp_path):
    """Each worker thread re-points one NVDEC decoder at its next file: frames must not depend on what
    that decoder read before (another size, a corrupt file, a range that ended mid-video)."""
    import threading

    import torch

    other = tmp_path / "other.mp4"
    write_test_video(other, 240, 320, shots=2, frames_per_shot=30, seed=3)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(pathlib.Path(h264_file).read_bytes()[:3000])

    def frames(path, **kwargs) -> torch.Tensor:
        return torch.cat([c.frames for c in nvcodec.decode_chunks(str(path), 16, **kwargs)]).cpu()

    def fresh(path, **kwargs) -> torch.Tensor:
        out = {}
        thread = threading.Thread(target=lambda: out.update(frames=frames(path, **kwargs)))  # new thread, new decoder
        thread.start()
        thread.join()
        return out["frames"]

    first, mid, second = fresh(h264_file), fresh(h264_file, start_frame=50, end_frame=70), fresh(other)
    assert torch.equal(frames(h264_file, end_frame=30), first[:30])  # stops mid-video
    assert torch.equal(frames(other), second)
    with pytest.raises(Exception):  # noqa: B017 - PyNvVideoCodec raises its own unexported exception types
        frames(broken)
    assert torch.equal(frames(h264_file, start_frame=50, end_frame=70), mid)
    assert torch.equal(frames(h264_file), first)


def test_probing_for_nvenc_leaves_the_callers_cuda_context_current(h264_file):
    """A failed NVENC open (H100/H200 have no encoder) leaves a CUDA context of its own current on
    the thread that tried, and torch then runs that thread's work in it, where the decoders' streams
    (made in the primary context) are invalid handles."""
    import ctypes

    import torch

    torch.zeros(1, device="cuda")
    driver = ctypes.CDLL("libcuda.so.1")

    def current() -> int:
        context = ctypes.c_void_p()
        driver.cuCtxGetCurrent(ctypes.byref(context))
        return context.value

    before = current()
    nvcodec.nvenc_available.cache_clear()
    nvcodec.nvenc_available()
    assert current() == before
    assert sum(len(c.indices) for c in nvcodec.decode_chunks(h264_file, 16, size=(90, 160))) == 96


def test_nvdec_decodes_before_torch_has_touched_cuda(h264_file):
    """A fresh interpreter, where nothing has initialised CUDA before the decoder is made with its
    stream."""
    import subprocess
    import sys

    code = ("import sys; from curator.video import nvcodec; "
            "print(sum(len(c.indices) for c in nvcodec.decode_chunks(sys.argv[1], 16)))")
    out = subprocess.run([sys.executable, "-c", code, h264_file], capture_output=True, text=True, timeout=120,
                         cwd=pathlib.Path(__file__).parents[2], check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-1] == "96"


def test_second_pass_runs_on_the_workers_stream(monkeypatch):
    """TransNetV2 work on the legacy default stream would stall every decoder of the process. The
    stage is called as the executors call it: the stream comes from the stage contract."""
    import torch

    from curator.config import CurateConfig
    from curator.stages import shots
    from curator.tasks import FrameAnalysis, VideoMeta, VideoTask

    on_default = []

    def cuts(model, thumbs, threshold):
        on_default.append(torch.cuda.current_stream() == torch.cuda.default_stream())
        return []

    monkeypatch.setattr(shots, "transnet_model", lambda device: None)
    monkeypatch.setattr(shots, "transnet_cuts", cuts)
    monkeypatch.setattr(shots, "candidate_segments", lambda *args: [(0, 20), (20, 40)])
    stage = shots.ShotDetectionStage.from_config(CurateConfig(device="cuda", second_pass=True))
    frames = np.zeros((40, 27, 48, 3), dtype=np.uint8)
    task = VideoTask(source="clip.mp4", meta=VideoMeta(fps=24.0, num_frames=40),
                     analysis=FrameAnalysis(small=frames, thumbs=frames))
    out = stage(task)
    assert out[0].ok, out[0].reason
    assert on_default == [False, False]


def test_a_recorded_timeline_has_one_span_per_nvdec_call(h264_file):
    from curator import tracing

    with tracing.recording() as spans:
        chunks = list(nvcodec.decode_chunks(h264_file, 16, size=(90, 160)))
    calls = [(start, end) for kind, start, end in spans if kind == "decode_call"]
    # One call per chunk of 16 of the 96 frames (more if the decoder hands out a short batch).
    assert sum(len(c.indices) for c in chunks) == 96 and len(calls) >= len(chunks) >= 6
    assert all(end >= start for start, end in calls)


def test_clip_frames_leave_the_process_as_equal_host_arrays():
    import torch

    from curator.pipeline import frames_to_host
    from curator.tasks import ClipTask

    frames = torch.randint(0, 255, (8, 36, 64, 3), dtype=torch.uint8, device="cuda")
    task = frames_to_host(ClipTask(source="a.mp4", source_frames=frames), "cuda")
    assert isinstance(task.source_frames, np.ndarray)
    assert np.array_equal(task.source_frames, frames.cpu().numpy())
