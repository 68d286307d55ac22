"""The ema, hpo and coord_check subcommands' run(cfg), with the trainer's functions stubbed."""
import math
from types import SimpleNamespace

import torch

from megatron_video.cli import coord_check as coord_check_cli
from megatron_video.cli import ema as ema_cli
from megatron_video.cli import hpo as hpo_cli
from megatron_video.optim.config import OptimConfig
from megatron_video.optim.coord_check import CoordCheckConfig
from megatron_video.optim.ema import EmaConfig
from megatron_video.optim.hpo import HpoConfig


def test_ema_writes_the_best_average_and_the_sweep(tmp_path, monkeypatch, write_snapshots):
    from megatron_video.training import evaluate

    write_snapshots({s: {"w": torch.tensor([float(s)])} for s in range(10, 101, 10)})
    # Validation prefers an average near 80: a long-ish EMA, neither the last weights nor uniform.
    monkeypatch.setattr(evaluate, "validation_loss", lambda cfg, state: abs(state["w"].item() - 80.0))
    cfg = SimpleNamespace(run=SimpleNamespace(output_dir=str(tmp_path)),
                          ema=EmaConfig(checkpoint_dir=str(tmp_path), gammas=[0.0, 4.0, 30.0]))
    assert ema_cli.run(cfg) == 0
    best = torch.load(tmp_path / "ema" / "ema_best.pt", weights_only=False)
    assert best["ema_gamma"] == 4.0 and best["step"] == 100  # gamma 4 averages to 87.9
    assert (tmp_path / "ema" / "sweep.png").exists() and (tmp_path / "ema" / "sweep.csv").exists()


def test_hpo_runs_short_trainings_with_the_suggested_multipliers(tmp_path, monkeypatch):
    from megatron_video.training import trainer

    seen = []

    def fake_train(cfg):
        seen.append((cfg.train.steps, cfg.run.output_dir, cfg.optim.lr_multipliers()))
        return SimpleNamespace(val_loss=math.log2(cfg.optim.lr_multipliers()["blocks.*"]) ** 2)

    monkeypatch.setattr(trainer, "train", fake_train)
    cfg = SimpleNamespace(run=SimpleNamespace(output_dir=str(tmp_path)), optim=OptimConfig(),
                          train=SimpleNamespace(steps=1000),
                          hpo=HpoConfig(iterations=2, initial_random=2, patterns=["blocks.*"], steps=7))
    assert hpo_cli.run(cfg) == 0
    assert [s[0] for s in seen] == [7, 7]
    assert [s[1] for s in seen] == [str(tmp_path / "hpo" / "trial_000"), str(tmp_path / "hpo" / "trial_001")]
    assert cfg.train.steps == 1000 and cfg.optim.layer_lr_multipliers == []  # the caller's cfg untouched
    assert (tmp_path / "hpo" / "observations.csv").read_text().count("\n") == 3


def test_coord_check_writes_its_plot(tmp_path):
    cfg = SimpleNamespace(run=SimpleNamespace(output_dir=str(tmp_path)), optim=OptimConfig(base_width=32),
                          coord_check=CoordCheckConfig(widths=[32, 64], seeds=1, steps=1))
    assert coord_check_cli.run(cfg) == 0
    assert (tmp_path / "coord_check.png").stat().st_size > 1000
