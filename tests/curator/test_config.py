"""CurateConfig validation names the key at fault; curate() fails fast on a missing input."""
import pathlib
import time

import pytest

from curator.config import CurateConfig
from curator.run import curate
from megatron_video.config import ConfigError


@pytest.mark.parametrize("field, value", [
    ("min_seconds", 0.0), ("max_seconds", 1.0), ("height", 351), ("fps", -1.0), ("executor", "spark"),
    ("device", "tpu"), ("min_frames", 10_000), ("clips_per_shard", 0), ("transnet_threshold", 1.5),
    ("nvdec_sessions", 0), ("nemo_backend", "spark"), ("part_count", 0), ("part_index", 1), ("part_index", -1),
    ("encoder_priority", "low"),
])
def test_bad_values_name_their_key(field, value):
    with pytest.raises(ConfigError) as err:
        CurateConfig(**{field: value})
    assert err.value.key == field


def test_defaults_are_the_issue_values():
    cfg = CurateConfig()
    assert (cfg.height, cfg.width, cfg.fps, cfg.min_frames) == (352, 640, 24.0, 81)
    assert (cfg.min_seconds, cfg.max_seconds) == (3.0, 30.0)
    assert cfg.min_clip_seconds == pytest.approx(81 / 24)


def test_missing_input_fails_fast_naming_input(tmp_path):
    start = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        curate(CurateConfig(input=str(tmp_path / "nope"), output=str(tmp_path / "out")), progress=False)
    assert err.value.key == "input"
    assert time.perf_counter() - start < 2.0
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("recipe", sorted((pathlib.Path(__file__).parents[2] / "recipes" / "curate").glob("*.yaml")),
                         ids=lambda path: path.stem)
def test_every_curation_recipe_is_a_valid_config(recipe):
    import yaml

    cfg = CurateConfig(**yaml.safe_load(recipe.read_text()))
    if recipe.stem == "cluster":  # the Ray runner, with room for its actors' batches
        assert cfg.executor == "ray" and cfg.max_in_flight >= 2 * 16 * 64
