"""A bad command line fails within seconds, before any work, naming what is wrong."""
import pathlib
import subprocess
import sys
import time

import pytest

from megatron_video.config import ConfigError
from megatron_video.config.loader import load_config

ROOT = pathlib.Path(__file__).resolve().parents[2]
MVIDEO = str(pathlib.Path(sys.executable).parent / "mvideo")


def _mvideo(*args: str, cwd: pathlib.Path = ROOT) -> tuple[subprocess.CompletedProcess, float]:
    started = time.perf_counter()
    result = subprocess.run([MVIDEO, *args], capture_output=True, text=True, cwd=cwd, timeout=120,
                            check=False)
    return result, time.perf_counter() - started


@pytest.mark.parametrize("args, named", [
    (["train", "train.stpes=5"], "train.stpes"),
    (["train", "optim.lr=-1"], "optim.lr"),
    (["train", "model.heads=7"], "model.heads"),
    (["train", "train.steps=many"], "train.steps"),
    (["train", "recipe=nonexistent"], "recipe"),
    (["curate", "input=/no/such/dir", "output=/tmp/x"], "input"),
    (["train", "data.shards=/no/such/dir"], "data.shards"),
    (["demo", "curate.min_seconds=0"], "curate.min_seconds"),
])
def test_bad_command_lines_fail_fast_naming_the_key(args, named, tmp_path):
    result, seconds = _mvideo(*args, f"run.output_dir={tmp_path / 'run'}")
    assert result.returncode == 2, result.stdout + result.stderr
    assert named in result.stderr, result.stderr
    assert seconds < 30, f"took {seconds:.1f} s to reject a bad command line"
    # Nothing was started: no run directory was written.
    assert not (tmp_path / "run").exists()


def test_unknown_subcommand_lists_the_real_ones():
    result, _ = _mvideo("trian")
    assert result.returncode == 2
    assert "unknown subcommand 'trian'" in result.stderr and "train" in result.stderr


def test_help_lists_every_subcommand():
    result, _ = _mvideo("--help")
    assert result.returncode == 0
    for name in ("demo", "curate", "train", "sample", "ema", "hpo", "catalog", "view", "preview"):
        assert f"  {name}" in result.stdout


def test_overrides_and_group_choices_reach_the_typed_config():
    cfg = load_config("demo", ["model=30m", "train.steps=7", "optim.lr=0.01", "data.frames=4"])
    assert cfg.train.steps == 7 and cfg.optim.lr == 0.01 and cfg.data.frames == 4
    assert cfg.model.hidden > load_config("demo").model.hidden
    # Interpolations resolve against the final values.
    cfg = load_config("demo", ["run.output_dir=/tmp/elsewhere"])
    assert cfg.curate.output == "/tmp/elsewhere/curated" and cfg.data.shards == "/tmp/elsewhere/curated"


def test_wrong_types_name_the_section_and_key():
    with pytest.raises(ConfigError) as err:
        load_config("demo", ["data.batch_size=0"])
    assert err.value.key == "data.batch_size"
    with pytest.raises(ConfigError) as err:
        load_config("demo", ["parallel.sequential_parallel=true"])
    assert "parallel.sequential_parallel" in str(err.value)


def test_a_run_fault_ends_the_command_with_its_message_not_a_traceback(monkeypatch, capsys, tmp_path):
    from curator.errors import RunFault
    from megatron_video.cli import curate as curate_command
    from megatron_video.cli.main import main

    def fault(cfg):
        raise RunFault("the encoder processes died; call curate() under a main guard")

    monkeypatch.setattr(curate_command, "run", fault)
    assert main(["curate", f"input={ROOT / 'data' / 'samples'}", f"output={tmp_path / 'out'}"]) == 1
    err = capsys.readouterr().err
    assert "mvideo curate: the encoder processes died; call curate() under a main guard" in err
    assert "Traceback" not in err
