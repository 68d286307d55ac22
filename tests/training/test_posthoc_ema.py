"""`mvideo ema` over the series of dist checkpoints a PP2 run keeps (gloo): the run's retention
keeps every other checkpoint plus the newest two, the command reads each into one process and
writes the best power-profile average, which equals the average computed by hand in float64 from
the same checkpoints (read with torch.distributed.checkpoint, not megatron); `mvideo export` takes
the chosen weights."""
import csv
import itertools
import json

import pytest
import torch
from safetensors.torch import load_file
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

from megatron_video.parallel.state import destroy_distributed
from megatron_video.testing.distributed import run_distributed

GAMMAS = [0.5, 8.0]
# The fused tensor-parallel projections are stored as canonical segments (model/sharded_state.py):
# W_in's rows [q | k | v | g | u], W_out's columns [attention | MLP].
FUSED_DIMS = {"w_in.weight": 0, "w_out.weight": 1}


def _overrides(shard_root: str, run_dir: str) -> list[str]:
    return [f"run.output_dir={run_dir}", f"data.shards={shard_root}", "optim.warmup_steps=1", "train.val_every=1000",
            "train.val_batches=1", "train.tensorboard=false", "data.num_workers=0", "data.val_fraction=0.25",
            "data.frames=4", "data.batch_size=2", "run.progress=false", "run.device=cpu"]


def _train_pp2_series(shard_root: str, run_dir: str) -> list[float]:
    from megatron.core import parallel_state

    from megatron_video.config.loader import load_config
    from megatron_video.training.trainer import Trainer

    parallel_state.destroy_model_parallel()  # the trainer starts its own layout on the launch's group
    cfg = load_config("demo", [*_overrides(shard_root, run_dir), "parallel.pipeline=2", "parallel.microbatches=2",
                               "train.steps=5", "train.checkpoint_every=1", "checkpoint.keep_last=2",
                               "checkpoint.keep_every=2"])
    return Trainer(cfg).train().losses


def _whole_model_by_hand(checkpoint, scratch) -> dict[str, torch.Tensor]:
    """The model's weights in a dist checkpoint, in float64, read with PyTorch's DCP converter."""
    dcp_to_torch_save(str(checkpoint), str(scratch))
    saved = torch.load(scratch, weights_only=False)
    weights: dict[str, list] = {}
    for key, value in saved.items():
        if not isinstance(value, torch.Tensor) or key.startswith("optimizer."):
            continue
        name, _, part = key.rpartition(".part")
        if part.isdigit():
            weights.setdefault(name, []).append((int(part), value))
        else:
            weights[key] = [(0, value)]
    return {name: torch.cat([v for _, v in sorted(parts)], dim=FUSED_DIMS.get(name.split(".", 2)[-1], 0)).double()
            for name, parts in weights.items()}


def test_ema_over_a_pp2_checkpoint_series_matches_a_float64_average_and_exports(shard_root, tmp_path):
    from megatron_video.cli.main import main

    run_dir = tmp_path / "run"
    losses = run_distributed(_train_pp2_series, 2, str(shard_root), str(run_dir))[-1]
    assert len(losses) == 5
    series = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert series == ["ckpt_0000002", "ckpt_0000004", "ckpt_0000005"]  # 1 and 3 pruned
    try:
        assert main(["ema", "recipe=demo", *_overrides(str(shard_root), str(run_dir)),
                     f"ema.gammas=[{','.join(map(str, GAMMAS))}]"]) == 0
    finally:
        destroy_distributed()
    with (run_dir / "ema" / "sweep.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [float(r["gamma"]) for r in rows] == GAMMAS and (run_dir / "ema" / "sweep.png").stat().st_size > 1000
    best = torch.load(run_dir / "ema" / "ema_best.pt", weights_only=False)
    assert best["ema_gamma"] == float(min(rows, key=lambda r: float(r["val_loss"]))["gamma"])
    assert best["step"] == 5 and best["series"] == series

    # By hand: checkpoint i stands for the steps (t_{i-1}, t_i], its weight the power profile's mass there.
    steps, gamma = [2, 4, 5], best["ema_gamma"]
    masses = [(b / 5) ** (gamma + 1) - (a / 5) ** (gamma + 1) for a, b in itertools.pairwise([0, *steps])]
    expected: dict[str, torch.Tensor] = {}
    for mass, name in zip(masses, series):
        for key, value in _whole_model_by_hand(run_dir / "checkpoints" / name, tmp_path / "whole.pt").items():
            expected[key] = expected.get(key, 0) + mass * value
    assert sorted(best["model"]) == sorted(expected)
    for key, value in expected.items():
        assert best["model"][key].dtype == torch.float32
        torch.testing.assert_close(best["model"][key].double(), value, rtol=1e-6, atol=1e-7, msg=key)
    # The average is not one of the checkpoints: the steps moved the weights.
    last = _whole_model_by_hand(run_dir / "checkpoints" / series[-1], tmp_path / "whole.pt")
    assert any(not torch.allclose(last[k], expected[k]) for k in expected)

    export_dir = tmp_path / "export"
    try:
        assert main(["export", "recipe=demo", f"run.output_dir={run_dir}", f"to={export_dir}",
                     f"weights={run_dir / 'ema' / 'ema_best.pt'}"]) == 0
    finally:
        destroy_distributed()
    exported = load_file(str(export_dir / "model.safetensors"))
    assert sorted(exported) == sorted(best["model"])
    assert all(torch.equal(exported[k], best["model"][k]) for k in exported)
    info = json.loads((export_dir / "config.json").read_text())
    assert info["ema_gamma"] == pytest.approx(gamma) and info["step"] == 5


def test_ema_without_a_checkpoint_series_is_refused_naming_the_key(tmp_path, capsys):
    from megatron_video.cli.main import main

    assert main(["ema", "recipe=demo", f"run.output_dir={tmp_path}"]) == 2
    assert "ema.checkpoint_dir" in capsys.readouterr().err
