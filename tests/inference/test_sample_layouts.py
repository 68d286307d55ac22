"""`mvideo sample` takes its layout from the config: impossible layouts are refused by key name before
any process group starts, and under torchrun with parallel.context=2 (on gloo) it writes the video
one process writes."""
import os
import pathlib
import subprocess
import sys
from dataclasses import replace

import av
import numpy as np
import pytest
import torch

from megatron_video.config import ConfigError
from megatron_video.config.loader import load_config
from megatron_video.inference.layout import validate_sampling_layout
from megatron_video.parallel.state import ParallelConfig

TORCHRUN = str(pathlib.Path(sys.executable).parent / "torchrun")
ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo():
    return load_config("demo")


def layout_of(cfg, world: int, cfg_parallel: bool = False, **parallel):
    """validate_sampling_layout of `cfg` with the `parallel` section and sample.cfg_parallel replaced."""
    return validate_sampling_layout(replace(cfg, parallel=ParallelConfig(**parallel),
                                            sample=replace(cfg.sample, cfg_parallel=cfg_parallel)), world)


@pytest.mark.parametrize("world, cfg_parallel, parallel, key", [
    (1, True, {}, "sample.cfg_parallel"),
    (2, True, dict(context=2), "sample.cfg_parallel"),
    (2, False, {}, "sample.cfg_parallel"),  # data-parallel ranks without CFG parallel would repeat the work
    (3, False, dict(context=2), "parallel"),
    (2, False, dict(pipeline=2), "parallel.pipeline"),
    (4, False, dict(context=4, context_mode="usp"), "parallel.context_mode"),  # 4 heads: ulysses alone
])
def test_impossible_sampling_layouts_are_refused_by_key(demo, world, cfg_parallel, parallel, key):
    with pytest.raises(ConfigError) as refused:
        layout_of(demo, world, cfg_parallel, **parallel)
    assert refused.value.key == key, refused.value


def test_accepted_sampling_layouts(demo):
    layouts = {(context, cfg_parallel): layout_of(demo, context * (2 if cfg_parallel else 1), cfg_parallel,
                                                  context=context)
               for context in (1, 2, 3) for cfg_parallel in (False, True)}
    assert {k: (v.context, v.data, v.context_mode) for k, v in layouts.items()} == {
        (1, False): (1, 1, "none"), (1, True): (1, 2, "none"),
        (2, False): (2, 1, "ulysses"), (2, True): (2, 2, "ulysses"),
        (3, False): (3, 1, "ring"), (3, True): (3, 2, "ring")}  # 3 does not divide 4 heads


def test_mvideo_sample_refuses_before_starting_any_process_group(demo, monkeypatch):
    import torch.distributed as dist

    from megatron_video.inference.sample import start_sampling

    started = dist.is_initialized()  # other tests of the session may have started a one-rank group
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun --nproc_per_node=2 sets it
    with pytest.raises(ConfigError, match="sample.cfg_parallel"):
        start_sampling(demo)
    assert dist.is_initialized() == started


def decoded(path: pathlib.Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


@pytest.mark.slow
def test_mvideo_sample_under_torchrun_with_context_parallel_equals_one_process(megatron_single, tmp_path):
    from megatron_video.inference.sample import sample_videos
    from megatron_video.model import build_model
    from megatron_video.testing.weights import exercised_state

    sampling = ["sample.steps=3", "sample.frames=3", "sample.height=24", "sample.width=40", "sample.seed=5",
                "sample.negative_prompt=static", "run.device=cpu", f"run.output_dir={tmp_path / 'run'}",
                "sample.prompts=['a video clip from Megamind']"]  # one prompt (the demo recipe samples five)
    torch.manual_seed(0)
    checkpoint = tmp_path / "ckpt.pt"
    torch.save({"model": exercised_state(build_model(load_config("demo").model))}, checkpoint)
    single = sample_videos(load_config("demo", [f"sample.checkpoint={checkpoint}",
                                                f"sample.output={tmp_path / 'single'}", *sampling]))
    command = [TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "megatron_video.cli.main", "sample",
               "recipe=demo", f"sample.checkpoint={checkpoint}", f"sample.output={tmp_path / 'cp2'}",
               "parallel.context=2", *sampling]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600, check=False)
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    (video,) = sorted((tmp_path / "cp2").glob("*.mp4"))
    assert result.stdout.split() == [str(video)]  # rank 0 alone writes and prints
    # 24x40 pixels: 5 x 12 x 20 = 1,200 video tokens + 32 text tokens: 1,232 tokens, 616 per CP rank.
    frames, reference = decoded(video), decoded(single[0])
    assert frames.shape == reference.shape == (3, 24, 40, 3)
    assert reference.std() > 10  # a video, not a flat frame
    assert np.abs(frames.astype(int) - reference.astype(int)).mean() < 0.5
