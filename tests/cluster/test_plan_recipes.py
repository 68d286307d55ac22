"""The real-size recipes pass `mvideo plan` for an H100 80 GB; a layout that does not fit fails it
and is answered with layouts that do, as a table, a CSV file and a figure."""
from __future__ import annotations

import ast
import csv
import pathlib
import re

import pytest

from megatron_video.cli.main import main
from megatron_video.config.loader import load_config
from megatron_video.plan.layouts import built_features

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("recipe", ["train_1b", "train_7b", "train_22b"])
def test_real_size_recipes_fit_an_h100(recipe, tmp_path, capsys):
    assert main(["plan", f"recipe={recipe}", "plan.gpu=h100-80gb", f"plan.output={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert "h100-80gb usable: 75.65 GiB -> fits" in out
    if recipe == "train_22b" and "pipeline" not in built_features():
        assert "estimate for a feature not yet built: pipeline" in out


def test_a_layout_that_does_not_fit_fails_and_gets_suggestions(tmp_path, capsys):
    # The 22B with TP=8 alone: 6.8B parameters per GPU, fp32 weights and gradients alone ~50 GiB.
    code = main(["plan", "recipe=train_22b", "parallel=tp8_sp_dist_opt", f"plan.output={tmp_path}"])
    out = capsys.readouterr().out
    assert code == 1 and "DOES NOT FIT" in out
    rows = list(csv.DictReader((tmp_path / "plan.csv").open()))
    assert rows[0]["layout"] == "tp8+sp pp1 cp1 dp8 dist-opt mb1" and rows[0]["fits"] == "False"
    assert len(rows) > 1 and all(row["fits"] == "True" for row in rows[1:])
    assert all(float(row["peak_gib"]) <= float(row["capacity_gib"]) for row in rows[1:])
    assert (tmp_path / "plan.png").stat().st_size > 10_000


def test_unknown_gpu_is_refused_naming_the_key(capsys):
    assert main(["plan", "recipe=train_1b", "plan.gpu=h100"]) == 2
    assert "plan.gpu" in capsys.readouterr().err


# The packages each encoder choice imports (megatron_video/model/codec, model/text).
ENCODER_PACKAGES = {"wan": "diffusers", "t5": "transformers", "minilm": "sentence-transformers", "pixel": None}


def test_the_image_installs_what_the_training_recipes_load():
    setup_tree = ast.parse((ROOT / "setup.py").read_text())
    [extras_node] = [node.value for node in ast.walk(setup_tree) if isinstance(node, ast.Assign)
                     and any(getattr(t, "id", None) == "extras" for t in node.targets)]
    extras = ast.literal_eval(extras_node)
    installed = re.search(r'-e "\.\[([a-z,]+)\]"', (ROOT / "Dockerfile").read_text()).group(1).split(",")
    packages = {name.split("[")[0].split("=")[0].split(">")[0].split(";")[0] for extra in installed
                for name in extras[extra]}
    for recipe in ("train_1b", "train_7b", "train_22b"):
        cfg = load_config(recipe)
        for choice in (cfg.encoders.codec, cfg.encoders.text):
            needed = ENCODER_PACKAGES[choice]
            assert needed is None or needed in packages, f"{recipe}: {choice} needs {needed}"
