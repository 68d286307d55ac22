"""train.steps=auto: the plan's arithmetic; a planned run is a run of its planned length from the
start, LR cooldown included; a run killed by SIGKILL after its plan resumes on that plan exactly,
whatever its own step rate; the refused combinations. The trainers here run on a virtual clock
(S_PER_STEP seconds per step taken), so the plan does not depend on the machine's speed."""
import json
import logging
import os
import signal

import pytest
from torch.multiprocessing import ProcessExitedException

from megatron_video.config import ConfigError
from megatron_video.config.loader import load_config
from megatron_video.optim.config import OptimConfig
from megatron_video.optim.schedule import build_scheduler, cooldown_start, rescheduled
from megatron_video.parallel.state import destroy_distributed
from megatron_video.testing.distributed import run_distributed
from megatron_video.training.step_plan import fewest_planned_steps, planned_total
from megatron_video.training.trainer import Trainer, check_inputs, train

S_PER_STEP = 0.5
# Timed steps 2-3, the plan at step 3 with 10 - 1.5 s left: 3 + floor(8.5 * 0.9 / 0.5) = 18 steps,
# their cooldown (optim.cooldown_start_fraction 0.5) from step 10 on.
PLAN = ["train.steps=auto", "train.time_limit_s=10", "train.max_steps=40", "train.plan_after_steps=1",
        "train.plan_measure_steps=2", "train.plan_margin=0.1", "optim.cooldown_start_fraction=0.5"]
PLANNED_STEPS = 18


def _config(shard_root, run_dir, *extra: str):
    # One intra-op thread, in this process and in the spawned one (run_distributed's cap): the same
    # summation order everywhere, so runs compare exactly.
    return load_config("demo", [
        f"run.output_dir={run_dir}", f"data.shards={shard_root}", "optim.warmup_steps=2", "train.val_every=1000",
        "train.checkpoint_every=4", "train.val_batches=1", "train.tensorboard=false", "data.num_workers=0",
        "data.val_fraction=0.25", "data.frames=4", "data.batch_size=2", "run.progress=false", "run.device=cpu",
        "train.log_every=1", "train.cpu_threads=1", *extra])


def _lrs(run_dir) -> dict[int, float]:
    """Step -> logged LR (a resumed run's lines after a crash's: the last one of a step counts)."""
    return {line["step"]: line["lr"] for line in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())}


def _train_on_virtual_clock(cfg, s_per_step: float = S_PER_STEP, kill_at: int | None = None):
    def clock() -> float:
        if trainer.step == kill_at:  # as the OOM killer or a lost node would, checkpoints in flight or not
            os.kill(os.getpid(), signal.SIGKILL)
        return trainer.step * s_per_step

    trainer = Trainer(cfg, clock=clock)
    return trainer.train()


def _killed_after_the_plan(shard_root: str, run_dir: str) -> None:
    from megatron.core import parallel_state

    parallel_state.destroy_model_parallel()  # the Trainer builds its own layout on the launch's process group
    _train_on_virtual_clock(_config(shard_root, run_dir, *PLAN), kill_at=10)


@pytest.fixture(autouse=True)
def _fresh_process_groups():
    yield
    destroy_distributed()


@pytest.fixture(scope="module")
def straight(shard_root, tmp_path_factory):
    """The planned run, uninterrupted: its summary, logged LRs and log."""
    run_dir = tmp_path_factory.mktemp("planned")
    logger, handler = logging.getLogger("megatron_video.training.trainer"), _Lines()
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        summary = _train_on_virtual_clock(_config(shard_root, run_dir, *PLAN))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        destroy_distributed()
    return summary, _lrs(run_dir), handler.lines, run_dir


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_the_plan_fits_the_time_left_less_its_margin_within_its_bounds():
    assert planned_total(25, seconds_left=400.0, s_per_step=0.5, margin=0.1, fewest=31, most=1500) == 25 + 720
    assert planned_total(25, seconds_left=400.0, s_per_step=0.01, margin=0.1, fewest=31, most=1500) == 1500
    assert planned_total(25, seconds_left=-3.0, s_per_step=0.5, margin=0.1, fewest=31, most=1500) == 31
    assert planned_total(25, seconds_left=400.0, s_per_step=0.0, margin=0.1, fewest=31, most=1500) == 1500
    assert planned_total(25, seconds_left=1.0, s_per_step=0.5, margin=0.0, fewest=40, most=30) == 30  # most wins
    assert fewest_planned_steps(OptimConfig(warmup_steps=30, cooldown_start_fraction=0.98), 25, 0) == 31
    assert fewest_planned_steps(OptimConfig(warmup_steps=2, cooldown_start_fraction=0.5), 3, 0) == 6
    assert fewest_planned_steps(OptimConfig(warmup_steps=2, cooldown_start_fraction=0.5), 3, 50) == 50
    for fraction in (0.5, 0.8, 0.98, 1.0):
        optim = OptimConfig(warmup_steps=0, cooldown_start_fraction=fraction)
        for step in range(1, 60):
            fewest = fewest_planned_steps(optim, step, 0)
            assert cooldown_start(optim, fewest) >= step
            assert fewest == step + 1 or cooldown_start(optim, fewest - 1) < step  # and no fewer


class _Groups:
    """What megatron's scheduler drives: param groups with their max_lr / min_lr."""

    def __init__(self):
        self.param_groups = [{"max_lr": 3e-3, "min_lr": 0.0}, {"max_lr": 1.5e-3, "min_lr": 1.5e-4}]


@pytest.mark.parametrize("fraction,warmup,style", [(0.5, 2, "linear"), (0.98, 30, "linear"), (0.8, 0, "cosine")])
def test_a_schedule_rescheduled_at_the_plan_is_the_planned_schedule_from_the_start(fraction, warmup, style):
    optim = OptimConfig(lr=3e-3, warmup_steps=warmup, cooldown_start_fraction=fraction, cooldown_style=style,
                        min_lr_fraction=0.0)
    plan_step = warmup + 5
    total = fewest_planned_steps(optim, plan_step, 0) + 7
    provisional, planned = build_scheduler(_Groups(), optim, 1000), build_scheduler(_Groups(), optim, total)
    lrs = []
    for step in range(1, total + 1):
        provisional.step(1)
        planned.step(1)
        if step == plan_step:
            provisional = rescheduled(provisional, optim, total)
        lrs.append([g["lr"] for g in provisional.optimizer.param_groups])
        assert lrs[-1] == [g["lr"] for g in planned.optimizer.param_groups], step
    # The cooldown runs to the end: each group's min_lr exactly at the planned last step, not before.
    assert lrs[-1] == [0.0, 1.5e-4] and lrs[-2][0] > 0.0
    assert lrs[plan_step - 1][0] == 3e-3


def test_a_planned_run_is_a_run_of_its_planned_length(straight, shard_root, tmp_path):
    summary, lrs, lines, run_dir = straight
    assert summary.planned_steps == summary.steps == PLANNED_STEPS and len(summary.losses) == PLANNED_STEPS
    assert json.loads((run_dir / "train_summary.json").read_text())["planned_steps"] == PLANNED_STEPS
    plan_lines = [line for line in lines if line.startswith("step plan:")]
    assert len(plan_lines) == 1 and plan_lines[0].startswith(f"step plan: train.steps={PLANNED_STEPS}, planned "
                                                             "at step 3 from 0.5000 s/step over 2 timed steps; "
                                                             "8.5 s of train.time_limit_s=10 left"), plan_lines
    # Full LR after the warmup up to the cooldown's start (step 9), then down to 0 at the planned last step.
    assert [lrs[step] for step in range(2, 10)] == [3e-3] * 8
    assert all(lrs[step] > lrs[step + 1] for step in range(9, PLANNED_STEPS))
    assert lrs[PLANNED_STEPS] == 0.0 and lrs[PLANNED_STEPS - 1] > 0.0
    fixed_dir = tmp_path / "fixed"
    fixed = train(_config(shard_root, fixed_dir, f"train.steps={PLANNED_STEPS}",
                          "optim.cooldown_start_fraction=0.5"))
    assert fixed.planned_steps == 0
    assert _lrs(fixed_dir) == lrs
    assert fixed.losses == summary.losses


def test_a_run_killed_after_its_plan_resumes_on_the_plan_exactly(straight, shard_root, tmp_path, caplog):
    summary, lrs, _, _ = straight
    run_dir = tmp_path / "killed"
    with pytest.raises(ProcessExitedException) as killed:
        run_distributed(_killed_after_the_plan, 1, str(shard_root), str(run_dir))
    assert killed.value.signal_name == "SIGKILL"
    # Ten times the step rate: planned afresh, this job would take train.max_steps (40).
    with caplog.at_level(logging.INFO, logger="megatron_video.training.trainer"):
        resumed = _train_on_virtual_clock(_config(shard_root, run_dir, *PLAN), s_per_step=S_PER_STEP / 10)
    assert resumed.start_step == 8  # the last checkpoint before the kill at step 10
    assert resumed.planned_steps == resumed.steps == PLANNED_STEPS
    assert f"step plan: train.steps={PLANNED_STEPS}, the plan of the run resumed" in caplog.text
    assert resumed.losses == summary.losses
    assert _lrs(run_dir) == lrs


def test_combinations_without_a_possible_plan_are_refused_naming_the_key(shard_root, tmp_path):
    refused = {
        "train.time_limit_s": ["train.steps=auto", "train.time_limit_s=0"],
        "train.max_steps": ["train.steps=auto", "train.max_steps=0"],
        "train.min_steps": ["train.steps=auto", "train.max_steps=100", "train.min_steps=101"],
        "train.steps": ["train.steps=soon"],
        "train.plan_margin": ["train.plan_margin=1.0"],
        "train.plan_measure_steps": ["train.plan_measure_steps=0"],
    }
    for key, overrides in refused.items():
        with pytest.raises(ConfigError) as error:
            _config(shard_root, tmp_path, *overrides)
        assert error.value.key == key, (key, error.value)
    # A plan at step 25 (5 untimed + 20 timed steps) with the cooldown over the second half needs a run of
    # 50 steps at least: a train.max_steps of 49 leaves it none, refused before any model is built.
    with pytest.raises(ConfigError, match="fewest steps \\(50\\)") as error:
        check_inputs(load_config("demo", [f"data.shards={shard_root}", "train.max_steps=49", "optim.warmup_steps=2",
                                          "train.plan_measure_steps=20", "optim.cooldown_start_fraction=0.5"]))
    assert error.value.key == "train.max_steps"
