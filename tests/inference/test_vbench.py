"""VBench through the `vbench` package: the config refuses what cannot run (dimensions that need
VBench's own prompt suite, missing weight files, the package not importable) before any work, and
the sampled videos land in the layout VBench documents for custom input: `{prompt}-{index}.mp4`
(its get_prompt_from_filename strips `-{index}`), with a `{"video file": prompt}` prompt file."""
import importlib.util
import json
import os
import re

import av
import pytest
import torch

from megatron_video.config import ConfigError
from megatron_video.inference.eval_config import EvalConfig
from megatron_video.inference.generator import GenerationRequest, VideoGenerator
from megatron_video.inference.vbench_dimensions import CUSTOM_INPUT_WEIGHTS
from megatron_video.inference.vbench_eval import PROMPT_FILE, check_vbench, missing_weights, write_vbench_videos
from megatron_video.testing.tiny import tiny_components

DIMENSIONS = ["subject_consistency", "temporal_flickering", "dynamic_degree"]


def test_dimensions_that_need_vbench_prompt_suite_are_refused():
    assert EvalConfig(vbench_dimensions=DIMENSIONS).vbench_dimensions == DIMENSIONS
    with pytest.raises(ConfigError) as refused:
        EvalConfig(vbench_dimensions=["temporal_flickering", "color"])
    assert refused.value.key == "vbench_dimensions" and "['color']" in str(refused.value)


def test_weights_are_checked_before_vbench_is_imported(tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("VBENCH_CACHE_DIR", raising=False)  # restored after the test: check_vbench sets it
    with pytest.raises(ConfigError) as refused:
        check_vbench(DIMENSIONS, str(tmp_path / "absent"))
    assert refused.value.key == "eval.vbench_weights"
    assert missing_weights(DIMENSIONS, tmp_path) == ["dino_model/dino_vitbase16_pretrain.pth",
                                                     "dino_model/facebookresearch_dino_main/hubconf.py",
                                                     "raft_model/models/raft-things.pth"]
    with pytest.raises(ConfigError, match="raft-things.pth") as refused:
        check_vbench(DIMENSIONS, str(tmp_path))
    assert refused.value.key == "eval.vbench_weights"
    for name in {n for d in DIMENSIONS for n in CUSTOM_INPUT_WEIGHTS[d]}:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"weights")
    assert missing_weights(DIMENSIONS, tmp_path) == []
    if importlib.util.find_spec("vbench") is None:  # this project's environment: refused, naming the key
        with pytest.raises(ConfigError, match="vbench package") as refused:
            check_vbench(DIMENSIONS, str(tmp_path))
        assert refused.value.key == "eval.vbench_dimensions"
    else:  # an environment with vbench: it imports, reading its weights from the folder
        assert check_vbench(DIMENSIONS, str(tmp_path)).VBench is not None
    assert os.environ["VBENCH_CACHE_DIR"] == str(tmp_path)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="one process"):
        check_vbench(DIMENSIONS, str(tmp_path))


def prompt_from_filename(name: str) -> str:
    """VBench's documented rule (vbench.utils.get_prompt_from_filename): `prompt-0.mp4` -> `prompt`."""
    stem = name.rsplit(".", 1)[0]
    return re.sub(r"-\d+$", "", stem)


def test_videos_and_prompt_file_in_vbench_custom_input_layout(megatron_single, tmp_path):
    generator = VideoGenerator(tiny_components(), torch.device("cpu"))
    requests = [GenerationRequest(prompt=prompt, frames=3, height=8, width=8, steps=2, seed=4)
                for prompt in ("a red car", "a cat/dog on a sofa")]
    prompts = write_vbench_videos(generator, requests, 2, tmp_path)
    assert prompts == {"a red car-0.mp4": "a red car", "a red car-1.mp4": "a red car",
                       "a cat dog on a sofa-0.mp4": "a cat/dog on a sofa",
                       "a cat dog on a sofa-1.mp4": "a cat/dog on a sofa"}
    assert json.loads((tmp_path / PROMPT_FILE).read_text()) == prompts
    assert all(prompt_from_filename(name) == prompt for name, prompt in prompts.items() if "/" not in prompt)
    clips = {}
    for name in prompts:
        with av.open(str(tmp_path / name)) as container:
            clips[name] = torch.stack([torch.from_numpy(f.to_ndarray(format="rgb24"))
                                       for f in container.decode(video=0)])
        assert clips[name].shape == (3, 8, 8, 3)
    assert not torch.equal(clips["a red car-0.mp4"], clips["a red car-1.mp4"])  # seeds 4 and 5
