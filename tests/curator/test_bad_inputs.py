"""Bad inputs, made from the real footage, land in the ledger with their reason; the run goes on."""
import shutil
from fractions import Fraction

import av
import numpy as np
import pytest

from curator.ledger import Ledger
from curator.run import curate


def write_video(path, frames, fps=24, pts=None, codec="libx264"):
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000) if pts is not None else Fraction(1, fps)
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = pts[i] if pts is not None else i
            frame.time_base = stream.codec_context.time_base
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def megamind(footage, size, count):
    frames = []
    with av.open(str(footage / "Megamind.avi")) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24", width=size[1], height=size[0]))
            if len(frames) == count:
                break
    return np.stack(frames)


def write_audio_only(source, path):
    """A sample video's own soundtrack, re-encoded to AAC in an .mp4 with no video stream."""
    with av.open(str(source)) as src, av.open(str(path), mode="w") as out:
        stream = out.add_stream("aac", rate=44100)
        resampler = av.AudioResampler(format="fltp", layout="stereo", rate=44100)
        for frame in src.decode(audio=0):
            for resampled in resampler.resample(frame):
                out.mux(stream.encode(resampled))
        out.mux(stream.encode(None))


# name -> (status, ledger column, text it contains)
EXPECTED = {
    "zero_byte.mp4": ("skipped", "reason", "zero-byte"),
    "zeros.mp4": ("failed", "reason", "corrupt"),
    # Two fifths of Megamind: its first shot (99 frames) is whole; the header promised 270 frames.
    "truncated.avi": ("done", "notes", "stream ends after"),
    "truncated.mp4": ("done", "notes", "stream ends after"),  # half of box.mp4, its index (moov) first
    "unsupported.avi": ("skipped", "reason", "unsupported codec"),
    "variable_rate.mp4": ("skipped", "reason", "variable frame rate"),
    "tiny.mp4": ("skipped", "reason", "tiny"),
    "low_resolution.mp4": ("skipped", "reason", "low resolution"),
    "audio_only.mp4": ("skipped", "reason", "audio-only"),
    "too_short.mp4": ("skipped", "reason", "too short"),
}


@pytest.fixture(scope="module")
def bad_dir(footage, tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad_inputs")
    megamind_avi = (footage / "Megamind.avi").read_bytes()
    (folder / "zero_byte.mp4").write_bytes(b"")
    (folder / "zeros.mp4").write_bytes(bytes(1 << 20))
    (folder / "truncated.avi").write_bytes(megamind_avi[: len(megamind_avi) * 2 // 5])
    box = (footage / "box.mp4").read_bytes()
    (folder / "truncated.mp4").write_bytes(box[: len(box) // 2])
    # The codec tag is rewritten to one no decoder knows (both the stream header and the format).
    patched = bytearray(megamind_avi)
    for tag in (b"xvid", b"XVID"):
        at = patched.find(tag, 0, 4096)
        patched[at:at + 4] = b"zzzz"
    (folder / "unsupported.avi").write_bytes(bytes(patched))
    frames = megamind(footage, (128, 176), 96)
    # Frame intervals alternating 20 ms and 63 ms: a genuinely variable frame rate.
    write_video(folder / "variable_rate.mp4", frames, pts=list(np.cumsum([0] + [20, 63] * 47 + [20])))
    write_video(folder / "tiny.mp4", megamind(footage, (16, 16), 96))
    write_video(folder / "low_resolution.mp4", megamind(footage, (64, 80), 96))  # 1.4x up to the demo's 64x112
    write_video(folder / "too_short.mp4", frames[:24])
    write_audio_only(footage / "box.mp4", folder / "audio_only.mp4")
    shutil.copy(footage / "cup.mp4", folder / "good.mp4")
    return folder


def test_every_bad_input_is_recorded_with_its_reason(bad_dir, make_config, tmp_path):
    # Variable frame rate is re-timed by default (tests/curator/test_vfr.py); here the option that rejects it.
    summary = curate(make_config(bad_dir, tmp_path / "out", max_upscale=1.2, reject_variable_frame_rate=True),
                     progress=False)
    rows = {row["source"].rsplit("/", 1)[-1]: row for row in Ledger(summary.ledger_path).inputs()}
    assert set(rows) == set(EXPECTED) | {"good.mp4"}
    for name, (status, column, text) in EXPECTED.items():
        assert rows[name]["status"] == status, (name, rows[name])
        assert text in rows[name][column], (name, rows[name])
    assert rows["good.mp4"]["status"] == "done" and rows["good.mp4"]["notes"] == ""
    assert all(row["decoder"] == "pyav" for row in rows.values() if row["status"] == "done")
    assert summary.clips_written >= 3
    assert summary.not_curated_by_reason == {"audio-only": 1, "corrupt": 1, "low resolution": 1, "too short": 1,
                                             "tiny": 1, "unsupported codec": 1, "variable frame rate": 1,
                                             "zero-byte file": 1}
    assert summary.inputs_by_status["done"] == 3
