"""Colour of encoded clips: the encoder's own RGB -> I420 conversion (OpenCV, or torch on the GPU)
gives the colours swscale would have given, and the clips decode back to their source frames."""
import io

import av
import numpy as np
import pytest
import torch

from curator.video import pyav_io
from curator.video.frames import rgb_to_i420


@pytest.fixture(scope="module")
def frames(footage):
    """48 real frames (Megamind's fade-in and first shot, faces and saturated colour), 264x360."""
    chunk = next(pyav_io.decode_chunks(str(footage / "Megamind.avi"), 48, start_frame=60, size=(264, 360)))
    return chunk.frames


def swscale_i420(frames: np.ndarray) -> np.ndarray:
    """What PyAV hands libx264 when given RGB frames: swscale's default conversion (BT.601, limited)."""
    return np.stack([av.VideoFrame.from_ndarray(f, format="rgb24").reformat(format="yuv420p").to_ndarray()
                     for f in frames])


def decode_all(data: bytes) -> tuple[np.ndarray, av.video.stream.VideoStream]:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
        return decoded, stream.codec_context


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / mse))


def test_i420_matches_swscale(frames):
    ours, theirs = rgb_to_i420(frames).astype(np.int16), swscale_i420(frames).astype(np.int16)
    height = frames.shape[1]
    luma, chroma = np.abs(ours - theirs)[:, :height], np.abs(ours - theirs)[:, height:]
    # Same BT.601 limited-range matrix: luma differs by rounding only.
    assert luma.max() <= 1
    # Chroma: a 2x2 block mean here, swscale's own filter there; they differ only along colour edges.
    assert chroma.mean() < 0.5
    assert luma.min() >= 0 and ours[:, :height].min() >= 16 and ours[:, :height].max() <= 235


def test_torch_i420_matches_opencv(frames):
    """The GPU path converts with torch; on CPU tensors it agrees with the OpenCV path to one level
    (OpenCV's luma is fixed point, torch's float)."""
    ours = rgb_to_i420(frames).astype(np.int16)
    tensor = rgb_to_i420(torch.from_numpy(frames))
    assert tensor.dtype == torch.uint8 and tuple(tensor.shape) == ours.shape
    diff = np.abs(tensor.numpy().astype(np.int16) - ours)
    assert diff.max() <= 1 and (diff > 0).mean() < 0.05


def test_encoded_clip_decodes_to_its_source_colours(frames):
    data = pyav_io.encode_h264(frames, fps=24.0, threads=1)
    decoded, context = decode_all(data)
    assert decoded.shape == frames.shape
    # Tagged with what the conversion produced: BT.601 (SMPTE 170M) matrix, limited range.
    assert (context.colorspace, context.color_range) == (pyav_io.AVCOL_SPC_SMPTE170M, pyav_io.AVCOL_RANGE_MPEG)
    # crf 23 on real footage: ~37 dB; a wrong matrix or range costs far more (tens of levels of bias).
    assert psnr(decoded, frames) > 33.0
    bias = (decoded.astype(np.float64) - frames).mean(axis=(0, 1, 2))
    assert np.abs(bias).max() < 2.5, bias


def test_quality_is_that_of_swscale_conversion(frames):
    """Same crf and preset: the clip is as close to its source as when PyAV converted with swscale."""
    ours, _ = decode_all(pyav_io.encode_h264(frames, fps=24.0, threads=1))
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=24)
        stream.height, stream.width, stream.pix_fmt = frames.shape[1], frames.shape[2], "yuv420p"
        stream.options = {"crf": "23", "preset": "veryfast"}
        stream.codec_context.thread_count = 1
        for rgb in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        out.mux(stream.encode(None))
    reference, _ = decode_all(buffer.getvalue())
    assert psnr(ours, frames) > psnr(reference, frames) - 0.3
    assert np.abs(ours.astype(np.float64).mean() - reference.astype(np.float64).mean()) < 0.5
