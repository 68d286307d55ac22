"""One decode per input: the frames kept by the decode pass give the same clips as decoding each
clip's range again, and the batched ContentDetector scores are PySceneDetect's own."""
import dataclasses

import numpy as np
from scenedetect.common import FrameTimecode
from scenedetect.detectors import ContentDetector
from scenedetect.stats_manager import StatsManager

from curator.config import CurateConfig
from curator.metrics import RunMetrics
from curator.stages import shots
from curator.stages.clip_length import ClipLengthStage
from curator.stages.crop import CropStage
from curator.stages.decode import DecodeStage
from curator.stages.probe import ProbeStage
from curator.stages.resize import ResizeStage
from curator.tasks import CropBox
from curator.video import pyav_io


def clips_of(path, cfg):
    task = shots.VideoTask(source=str(path))
    for stage in (ProbeStage.from_config(cfg), DecodeStage.from_config(cfg), shots.ShotDetectionStage.from_config(cfg)):
        [task] = stage(task)
    assert task.ok, task.reason
    kept = task.analysis.kept
    return task, kept, ClipLengthStage.from_config(cfg)(task)


def test_kept_frames_match_a_range_decode(footage):
    cfg = CurateConfig(device="cpu", height=64, width=112, fps=12.0, min_seconds=2.0, max_seconds=10.0,
                       min_frames=24, second_pass=False)
    video, kept, clips = clips_of(footage / "Megamind.avi", cfg)
    assert kept is not None and len(kept) == video.meta.num_frames
    assert video.analysis.kept is None  # handed to the clips
    assert len(clips) >= 2
    for clip in clips:
        [clip] = CropStage.from_config(cfg)(clip)
        assert clip.ok and clip.source_frames is not None
        again = dataclasses.replace(clip, source_frames=None, metrics=RunMetrics())
        [fast] = ResizeStage.from_config(cfg)(clip)
        [slow] = ResizeStage.from_config(cfg)(again)
        assert fast.ok and slow.ok and fast.frames.shape == slow.frames.shape == (fast.num_frames, 64, 112, 3)
        assert np.abs(fast.frames.astype(np.int16) - slow.frames.astype(np.int16)).max() <= 1, clip.key


def test_a_crop_needing_more_detail_decodes_its_range_again(footage):
    cfg = CurateConfig(device="cpu", height=64, width=112, fps=12.0, min_seconds=2.0, max_seconds=10.0,
                       min_frames=24, second_pass=False)
    _, _, clips = clips_of(footage / "Megamind.avi", cfg)
    clip = clips[0]
    meta = clip.source_meta
    clip.crop = CropBox(meta.height // 4, meta.height * 3 // 4, meta.width // 4, meta.width * 3 // 4)
    [out] = ResizeStage.from_config(cfg)(clip)
    assert out.ok and out.frames.shape[1:] == (64, 112, 3)


def test_retain_budget_zero_falls_back_to_range_decode(footage):
    cfg = CurateConfig(device="cpu", height=64, width=112, fps=12.0, min_seconds=2.0, max_seconds=10.0,
                       min_frames=24, second_pass=False, retain_frames_max_mb=0)
    _, kept, clips = clips_of(footage / "cup.mp4", cfg)
    assert kept is None and all(c.source_frames is None for c in clips)
    [clip] = CropStage.from_config(cfg)(clips[0])
    [clip] = ResizeStage.from_config(cfg)(clip)
    assert clip.ok and clip.frames.shape[1:] == (64, 112, 3)


def test_decode_keeps_a_second_size_from_the_same_pass(footage):
    path = str(footage / "cup.mp4")
    both = list(pyav_io.decode_chunks(path, 32, size=(60, 80), keep=True, keep_size=(120, 160)))
    small = np.concatenate([c.frames for c in pyav_io.decode_chunks(path, 32, size=(60, 80))])
    kept = np.concatenate([c.frames for c in pyav_io.decode_chunks(path, 32, size=(120, 160))])
    assert np.array_equal(np.concatenate([c.frames for c in both]), small)
    assert np.array_equal(np.concatenate([c.kept for c in both]), kept)


def test_analysis_frames_collected_every_chunk_match_one_collection(footage, monkeypatch):
    """The decode stage collects its host copies whenever PINNED_IN_FLIGHT_BYTES are in flight: the
    analysis frames and thumbnails must not depend on how often that happens."""
    from curator.stages import decode

    cfg = CurateConfig(device="cpu", decode_chunk_frames=16)
    [probed] = ProbeStage.from_config(cfg)(shots.VideoTask(source=str(footage / "Megamind.avi")))

    def analysis():
        task = shots.VideoTask(source=probed.source, meta=dataclasses.replace(probed.meta))
        [task] = DecodeStage.from_config(cfg)(task)
        assert task.ok, task.reason
        return task.analysis

    once = analysis()
    monkeypatch.setattr(decode, "PINNED_IN_FLIGHT_BYTES", 1)  # collect after every chunk
    every_chunk = analysis()
    assert len(once.small) == 270
    assert np.array_equal(once.small, every_chunk.small) and np.array_equal(once.thumbs, every_chunk.thumbs)


def test_batched_content_scores_are_pyscenedetects(footage):
    cfg = CurateConfig(device="cpu")
    task = shots.VideoTask(source=str(footage / "Megamind.avi"))
    for stage in (ProbeStage.from_config(cfg), DecodeStage.from_config(cfg)):
        [task] = stage(task)
    frames = task.analysis.small[80:130]
    detector = ContentDetector(threshold=27.0, min_scene_len=8)
    detector.stats_manager = StatsManager()
    reference = []
    for i, frame in enumerate(frames):
        detector.process_frame(FrameTimecode(i, fps=24.0), np.ascontiguousarray(frame[..., ::-1]))
        value = detector.stats_manager.get_metrics(FrameTimecode(i, fps=24.0), [ContentDetector.FRAME_SCORE_KEY])[0]
        reference.append(value or 0.0)
    np.testing.assert_allclose(shots.content_scores(frames), reference, rtol=1e-5, atol=1e-4)


def test_max_clips_per_source_keeps_each_videos_first_clips(footage):
    cfg = CurateConfig(device="cpu", height=64, width=112, fps=12.0, min_seconds=2.0, max_seconds=10.0,
                       min_frames=24, second_pass=False)
    task = shots.VideoTask(source=str(footage / "Megamind.avi"))
    for stage in (ProbeStage.from_config(cfg), DecodeStage.from_config(cfg), shots.ShotDetectionStage.from_config(cfg)):
        [task] = stage(task)
    capped_task = dataclasses.replace(task, analysis=dataclasses.replace(task.analysis))
    every = ClipLengthStage.from_config(cfg)(task)
    first = ClipLengthStage.from_config(dataclasses.replace(cfg, max_clips_per_source=2))(capped_task)
    assert len(every) > 2
    assert [(c.key, c.start_frame, c.end_frame) for c in first] == [(c.key, c.start_frame, c.end_frame)
                                                                    for c in every[:2]]
    assert [c.clips_in_source for c in first] == [2, 2] and every[0].clips_in_source == len(every)
