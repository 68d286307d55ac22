"""The hpo and coord_check subcommands' run(cfg), with the trainer's functions stubbed (`mvideo ema`
runs for real in tests/training/test_posthoc_ema.py)."""
import math
from types import SimpleNamespace

from megatron_video.cli import coord_check as coord_check_cli
from megatron_video.cli import hpo as hpo_cli
from megatron_video.optim.config import OptimConfig
from megatron_video.optim.coord_check import CoordCheckConfig
from megatron_video.optim.hpo import HpoConfig


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
