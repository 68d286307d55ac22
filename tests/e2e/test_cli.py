"""A bad command line fails before any work, naming what is wrong."""
import json
import pathlib
import resource
import subprocess
import sys

import pytest

from megatron_video.config import ConfigError
from megatron_video.config.loader import load_config

ROOT = pathlib.Path(__file__).resolve().parents[2]
MVIDEO = str(pathlib.Path(sys.executable).parent / "mvideo")


# `mvideo ARGS` in a process that reports, as its last stdout line, what work the command started:
# process groups (torch.distributed) and VideoDiT models built.
PROBE = """
import json, sys
import torch.distributed as dist
from megatron_video.model import model as dit
built = []
build = dit.VideoDiT.__init__
def counted(self, *args, **kwargs):
    built.append(type(self).__name__)
    build(self, *args, **kwargs)
dit.VideoDiT.__init__ = counted
from megatron_video.cli.main import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "process_group": dist.is_initialized(), "models": len(built)}))
"""
# CPU seconds (not wall time, which the machine's load stretches) a refusal may take: the imports
# of torch and megatron-core and the configuration's checks, far below starting a run.
REFUSAL_CPU_S = 60


def _mvideo(*args: str, cwd: pathlib.Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([MVIDEO, *args], capture_output=True, text=True, cwd=cwd, timeout=600, check=False)


def _probed_mvideo(*args: str) -> tuple[subprocess.CompletedProcess, dict, float]:
    """(the process, what work it started, its CPU seconds)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, cwd=ROOT,
                            timeout=600, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert result.returncode == 0 and result.stdout, result.stdout + result.stderr  # main() returned
    cpu_s = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return result, json.loads(result.stdout.splitlines()[-1]), cpu_s


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
def test_bad_command_lines_are_refused_before_any_work_naming_the_key(args, named, tmp_path):
    result, work, cpu_s = _probed_mvideo(*args, f"run.output_dir={tmp_path / 'run'}")
    assert work["code"] == 2, result.stdout + result.stderr
    assert named in result.stderr, result.stderr
    # Nothing was started: no run directory written, no process group, no model.
    assert not (tmp_path / "run").exists()
    assert work == {"code": 2, "process_group": False, "models": 0}
    assert cpu_s < REFUSAL_CPU_S, f"took {cpu_s:.1f} CPU s to refuse a bad command line"


def test_unknown_subcommand_lists_the_real_ones():
    result = _mvideo("trian")
    assert result.returncode == 2
    assert "unknown subcommand 'trian'" in result.stderr and "train" in result.stderr


def test_help_lists_every_subcommand():
    result = _mvideo("--help")
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
