"""Variable-frame-rate input: re-timed to the output fps by its timestamps, not skipped."""
from fractions import Fraction

import av
import numpy as np

from curator.video.retime import retime_indices

# 48 frames 10 ms apart, then 48 frames 90 ms apart: a burst, then a slow stretch (4.8 s in all).
INTERVALS_MS = [10] * 48 + [90] * 47


def write_vfr(path, frames, pts_ms):
    """An H.264 MP4 whose frames carry the given timestamps (milliseconds): PyAV with a 1/1000
    time base and explicit pts."""
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("libx264", rate=24)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for rgb, pts in zip(frames, pts_ms):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = int(pts), Fraction(1, 1000)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def test_retime_picks_the_frame_on_screen():
    pts = np.array([0, 10, 20, 110, 200, 290])  # ms; the last frame stays up for the median interval, 90
    assert retime_indices(pts, 0.001, 20.0).tolist() == [0, 2, 2, 3, 4, 4, 5]  # at 0, 50, ..., 300 ms


def test_a_vfr_file_yields_clips_at_the_target_fps(tmp_path, make_config, read_shards, decode):
    """Each source frame is a flat grey level naming its index (40 + 2 i): every output frame must
    show the source frame on screen at its instant, which the average frame rate would get wrong
    (it would spend half the clip in the 0.5 s burst)."""
    from curator.run import curate

    frames = np.stack([np.full((176, 240, 3), 40 + 2 * i, dtype=np.uint8) for i in range(96)])
    pts = np.concatenate([[0], np.cumsum(INTERVALS_MS)])
    (tmp_path / "in").mkdir()
    write_vfr(tmp_path / "in" / "phone.mp4", frames, pts)
    cfg = make_config(tmp_path / "in", tmp_path / "out", filters={"run": []}, min_seconds=2.0, max_seconds=10.0)
    summary = curate(cfg, progress=False)
    assert summary.inputs_by_status == {"done": 1} and summary.clips_written == 1
    (_, meta, mp4), = read_shards(tmp_path / "out")
    out, fps, _, _ = decode(mp4)
    assert fps == cfg.fps == meta["fps"] and len(out) == meta["num_frames"]
    assert meta["source_fps"] == cfg.fps  # the clip was cut from the re-timed video
    shown = np.array([round((f.mean() - 40) / 2) for f in out])
    expected = np.searchsorted(pts / 1000, meta["start_frame"] / cfg.fps + np.arange(len(out)) / cfg.fps + 1e-9,
                               side="right") - 1
    assert np.abs(shown - expected).max() <= 1, (shown.tolist(), expected.tolist())
    assert expected.min() < 48 < expected.max()  # the clip spans the burst and the slow stretch
