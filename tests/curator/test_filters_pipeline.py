"""The filters through `curate`: every clip scored into the catalog, judged by the thresholds, and
judged again by a rerun with other thresholds without decoding any video."""
import av
import numpy as np
import pytest

from megatron_video.data.catalog import load_catalog

SIZE = (176, 240)  # (h, w): small inputs keep the run short; the demo recipe's output is 64 x 112


def write_video(path, frames, fps=24):
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())


@pytest.fixture(scope="module")
def inputs(footage, tmp_path_factory):
    """Four 2.3 s inputs made of Megamind's second shot (frames 99-155): as it is; a brighter copy
    (a near-duplicate); tinted sepia; and its first frame held (static)."""
    with av.open(str(footage / "Megamind.avi")) as container:
        shot = np.stack([f.to_ndarray(format="rgb24", width=SIZE[1], height=SIZE[0])
                         for i, f in enumerate(container.decode(video=0)) if 99 <= i < 155])
    grey = shot.astype(np.float32).mean(axis=3, keepdims=True)
    folder = tmp_path_factory.mktemp("filter_inputs")
    write_video(folder / "colour.mp4", shot)
    write_video(folder / "copy.mp4", np.clip(shot * 1.08 + 4, 0, 255).astype(np.uint8))
    write_video(folder / "sepia.mp4", np.clip(grey * [1.28, 0.89, 0.52], 0, 255).astype(np.uint8))
    write_video(folder / "static.mp4", np.repeat(shot[:1], len(shot), axis=0))
    return folder


def verdicts(output) -> dict[str, tuple[bool, str]]:
    catalog = load_catalog(output)
    return {key.split("-")[0]: (bool(ok), reason)
            for key, ok, reason in zip(catalog["key"], catalog["filter_pass"], catalog["filter_reason"])}


def test_filters_judge_clips_and_a_rerun_rejudges_without_decoding(inputs, tmp_path, make_config):
    from curator.run import curate

    output = tmp_path / "out"
    cfg = make_config(inputs, output, filters={"ocr_frames": 1})
    first = curate(cfg, progress=False)
    assert first.clips_written == 4
    assert verdicts(output) == {"colour": (True, ""), "copy": (False, "near-duplicate"),
                                "sepia": (False, "tinted"), "static": (False, "static")}
    assert first.clips_rejected_by_reason == {"near-duplicate": 1, "tinted": 1, "static": 1}
    scores = load_catalog(output, features=["filter_scores"])
    assert scores[["colourfulness", "still_fraction", "motion_magnitude", "faces", "text_coverage"]].notna().all().all()

    # Looser colour and stillness thresholds: the same output, judged again from the stored scores.
    looser = make_config(inputs, output, filters={"ocr_frames": 1, "min_hue_spread": 0.0, "max_still_fraction": 1.0})
    second = curate(looser, progress=False)
    assert second.inputs_skipped_as_finished == 4 and second.clips_written == 0
    assert second.metrics.wall("decode") == 0 and second.metrics.wall("filter_verdict") > 0
    assert verdicts(output) == {"colour": (True, ""), "copy": (False, "near-duplicate"),
                                "sepia": (True, ""), "static": (True, "")}
    assert second.clips_rejected_by_reason == {"near-duplicate": 1}
    assert len(load_catalog(output, "filter_pass")) == 3  # what the training loader's data.filter selects


def test_filter_settings_come_from_overrides_and_bad_ones_name_their_key():
    from megatron_video.config import ConfigError
    from megatron_video.config.loader import load_config

    cfg = load_config("curate", ["curate.filters.max_still_fraction=0.3", "curate.filters.run=[colour,motion]"])
    assert cfg.curate.filters.max_still_fraction == 0.3 and cfg.curate.filters.run == ["colour", "motion"]
    for override, key in (("curate.filters.min_uniformity=2", "curate.filters.min_uniformity"),
                          ("curate.filters.run=[colour,sharpness]", "curate.filters.run")):
        with pytest.raises(ConfigError) as err:
            load_config("curate", [override])
        assert err.value.key == key
