"""VBench scores of sampled videos, through the `vbench` package, with its weights from a local folder.

VBench (Huang et al., 2024) scores videos per dimension with its own models. It is run, not
reimplemented: the sampled videos go to a folder in VBench's layout (`{prompt}-{index}.mp4`, plus
the `{"video path": prompt}` file its `--prompt_file` reads), then
`VBench(device, full_info, out).evaluate(..., mode="custom_input", local=True)` scores them and
writes `<name>_eval_results.json`. Custom input (our own prompts) supports the dimensions that need
no metadata from VBench's prompt suite: `CUSTOM_INPUT_WEIGHTS`'s keys.

Weights: vbench reads them from $VBENCH_CACHE_DIR (fixed when `vbench.utils` is imported) and
fetches a missing file with wget. Here every file a dimension needs must already be under
`eval.vbench_weights` (checked before any sampling), so an evaluation never reaches the network.

vbench 0.1.5 pins numpy<2 and transformers 4.33 and imports torchvision and decord, none of which
fit this project's environment: it runs where it is importable (its own environment, with this
package on the path), and `eval.vbench_dimensions` is refused where it is not.
"""
from __future__ import annotations

import importlib
import json
import os
import pathlib
import re

import torch

from megatron_video.config import ConfigError
from megatron_video.inference.generator import GenerationRequest, VideoGenerator
from megatron_video.inference.vbench_dimensions import CUSTOM_INPUT_WEIGHTS
from megatron_video.inference.video_io import write_mp4

PROMPT_FILE = "prompts.json"


def missing_weights(dimensions: list[str], weights_dir: pathlib.Path) -> list[str]:
    """The files `dimensions` need that are not under `weights_dir`."""
    return sorted({name for d in dimensions for name in CUSTOM_INPUT_WEIGHTS[d] if not (weights_dir / name).is_file()})


def import_vbench(weights_dir: pathlib.Path):
    """The `vbench` module reading its weights from `weights_dir`, or a ConfigError saying why not."""
    os.environ["VBENCH_CACHE_DIR"] = str(weights_dir)  # read once, when vbench.utils is imported
    try:
        return importlib.import_module("vbench")
    except Exception as err:  # ImportError, or what its torchvision / decord imports raise  # noqa: BLE001
        raise ConfigError("eval.vbench_dimensions",
                          f"needs the vbench package, which does not import here ({type(err).__name__}: {err}); "
                          f"it pins numpy<2 and transformers 4.33 and needs torchvision and decord: run "
                          f"`mvideo eval` from an environment that has them, or leave eval.vbench_dimensions "
                          f"empty") from None


def check_vbench(dimensions: list[str], weights: str):
    """Before any work: the vbench module for `dimensions` with every weight file present."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # vbench splits its videos over any process group it finds
        raise ConfigError("eval.vbench_dimensions", "VBench scores on one process: run mvideo eval without torchrun")
    weights_dir = pathlib.Path(weights)
    if not weights or not weights_dir.is_dir():
        raise ConfigError("eval.vbench_weights", f"'{weights}' is not a folder: VBench's weights are read from a "
                                                 f"local folder in its cache layout (e.g. clip_model/ViT-B-32.pt)")
    missing = missing_weights(dimensions, weights_dir)
    if missing:
        raise ConfigError("eval.vbench_weights", f"'{weights}' lacks {missing} (vbench would try to download them)")
    return import_vbench(weights_dir)


def video_name(prompt: str, index: int) -> str:
    """VBench's file name for video `index` of `prompt` (`{prompt}-{index}.mp4`); characters a file
    name cannot hold become spaces (the prompt file carries the exact prompt)."""
    stem = re.sub(r"[/\x00]", " ", prompt).strip()[:200]
    return f"{stem}-{index}.mp4"


def write_vbench_videos(generator: VideoGenerator, requests: list[GenerationRequest], per_prompt: int,
                        videos_dir: pathlib.Path) -> dict[str, str]:
    """Sample `per_prompt` videos of each request (seeds seed, seed + 1, ...) into `videos_dir`; write
    and return the prompt file's map {video file name: prompt} (rank 0; every rank samples)."""
    prompts = {}
    for request in requests:
        for index in range(per_prompt):
            frames = generator.generate(GenerationRequest(**{**request.to_dict(), "seed": request.seed + index}))
            if frames is not None:
                name = video_name(request.prompt, index)
                write_mp4(frames, videos_dir / name, request.fps)
                prompts[name] = request.prompt
    if prompts:
        (videos_dir / PROMPT_FILE).write_text(json.dumps(prompts, indent=2))
    return prompts


def run_vbench(vbench, videos_dir: pathlib.Path, prompts: dict[str, str], dimensions: list[str],
               out_dir: pathlib.Path, device: torch.device) -> dict:
    """vbench's scores of the videos in `videos_dir` ({dimension: [mean, per-video results]})."""
    full_info = pathlib.Path(vbench.__file__).parent / "VBench_full_info.json"
    runner = vbench.VBench(device, str(full_info), str(out_dir))
    runner.evaluate(videos_path=str(videos_dir), name="mvideo", prompt_list=prompts, dimension_list=dimensions,
                    local=True, mode="custom_input", imaging_quality_preprocessing_mode="longer")
    return json.loads((out_dir / "mvideo_eval_results.json").read_text())
