"""demo_step_cost: CPU-seconds of one demo training step, and where they go.

The demo recipe trained from a curated dir (`mvideo curate recipe=demo curate.output=DIR`) for
`--steps` steps, twice from scratch, each a fresh Trainer:
- `all_cores`: torch's intra-op threads on every core of the process (train.cpu_threads = the core
  count: what torch does unless told otherwise, and what the trainer did before choosing);
- `automatic`: train.cpu_threads=0, the trainer's choice (its share of the cores less one per loader
  worker, training.environment.cpu_training_threads).
Each step is measured in CPU time, not wall time (the machine is shared): the training process's
(time.process_time, all its threads) and its loader workers' (psutil), averaged over the steady
steps (the first three, which start the loader worker and encode the captions, and the last, which
checkpoints, are left out). The ratio is all_cores' CPU-s per step over automatic's.

A third run, automatic under cProfile with process time as its clock, splits a step into the
loop's parts (cumulative CPU per step; the profiler's own cost inflates the Python-heavy parts),
and times validation, checkpointing and the muP band check per call, amortised over the recipe's
train.steps by its intervals.

    python benchmarks/demo_step_cost.py CURATED_DIR [--steps 20] [--overrides key=value ...]
"""
from __future__ import annotations

import argparse
import cProfile
import pathlib
import pstats
import statistics
import sys
import tempfile
import time

import psutil

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from benchmarks.common import write_result
from megatron_video.config.loader import load_config
from megatron_video.cpu_cores import available_cores
from megatron_video.parallel.state import destroy_distributed
from megatron_video.training.environment import setup_logging
from megatron_video.training.trainer import Trainer

WARM_STEPS = 3  # loader worker start, first caption encodings

# Parts of a step: (file the function is defined in, ending, function name). Where several functions
# of that name live in the file (megatron's optimizer classes), the outermost call is the one counted.
PARTS = {
    "step": ("megatron_video/training/trainer.py", "_train_step"),
    "loader_wait": ("torch/utils/data/dataloader.py", "__next__"),
    "conditioning": ("megatron_video/training/objective.py", "condition_batch"),
    "text_encoding": ("megatron_video/model/text/cache.py", "encode"),
    "noise_and_timesteps": ("megatron_video/training/objective.py", "make_microbatch"),
    "forward": ("megatron/core/pipeline_parallel/schedules.py", "forward_step"),
    "backward": ("megatron/core/pipeline_parallel/schedules.py", "backward_step"),
    "grad_finalize": ("megatron/core/distributed/finalize_model_grads.py", "finalize_model_grads"),
    "nonfinite_check": ("megatron_video/training/faults.py", "grads_finite"),
    "optimizer": ("megatron/core/optimizer/optimizer.py", "step"),
    "optimizer_grad_norm": ("megatron/core/optimizer/optimizer.py", "get_grad_norm"),
    "optimizer_clip": ("megatron/core/optimizer/clip_grads.py", "clip_grad_by_total_norm_fp32"),
    "sphere_adamw": ("megatron_video/optim/sphere_adamw.py", "step"),
    "zero_grad": ("megatron/core/distributed/distributed_data_parallel.py", "zero_grad_buffer"),
    "metrics": ("megatron_video/training/metrics.py", "record"),
}
PER_CALL = {
    "validation": ("megatron_video/training/trainer.py", "validate"),
    "checkpoint": ("megatron_video/training/trainer.py", "_save"),
    "band_check": ("megatron_video/training/trainer.py", "_check_band"),
}


class TimedTrainer(Trainer):
    """The trainer, with each step's CPU time (this process and its children) and wall time kept."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.timings: list[tuple[float, float, float]] = []  # (own CPU s, children's CPU s, wall s)
        self._process = psutil.Process()

    def _children_cpu(self) -> float:
        total = 0.0
        for child in self._process.children(recursive=True):
            try:
                times = child.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total

    def _train_step(self, *args, **kwargs):
        children = self._children_cpu()
        cpu, wall = time.process_time(), time.perf_counter()
        saved = super()._train_step(*args, **kwargs)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        self.timings.append((cpu, self._children_cpu() - children, wall))
        return saved


def _config(shards: str, run_dir: pathlib.Path, steps: int, overrides: list[str]):
    # The recipe's schedule before its step plan (train.max_steps'), stopped after `steps`: the same LR and
    # intervals as the demo's first steps, and no time limit.
    most = load_config("demo", overrides).train.most_steps
    return load_config("demo", [f"run.output_dir={run_dir}", f"data.shards={shards}", f"train.stop_after={steps}",
                                f"train.steps={most}", "train.time_limit_s=0", "run.progress=false", *overrides])


def timed_run(shards: str, run_dir: pathlib.Path, steps: int, overrides: list[str]) -> dict:
    trainer = TimedTrainer(_config(shards, run_dir, steps, overrides))
    try:
        summary = trainer.train()
    finally:
        destroy_distributed()
    steady = trainer.timings[WARM_STEPS:-1]
    own, children, wall = (statistics.mean(t[i] for t in steady) for i in range(3))
    warm = sum(t[0] + t[1] for t in trainer.timings[:WARM_STEPS])
    return {"cpu_threads": summary.cpu_threads, "steady_steps": len(steady),
            "cpu_s_per_step": round(own + children, 4), "process_cpu_s_per_step": round(own, 4),
            "loader_workers_cpu_s_per_step": round(children, 4), "wall_s_per_step": round(wall, 4),
            "first_steps_cpu_s": round(warm, 3), "loss_at_last_step": summary.losses[-1],
            "load_average_1min": round(psutil.getloadavg()[0], 1)}


def _cumulative(stats: pstats.Stats, where: tuple[str, str]) -> tuple[float, int]:
    """(CPU s, calls) of the outermost function named where[1] defined in a file ending where[0]."""
    found = [(cumulative, calls) for (path, _, name), (_, calls, _, cumulative, _) in stats.stats.items()
             if name == where[1] and path.endswith(where[0])]
    return max(found, default=(0.0, 0))


def profiled_run(shards: str, run_dir: pathlib.Path, steps: int, overrides: list[str]) -> dict:
    interval = max(steps // 2, 1)  # every periodic task runs twice
    recipe = load_config("demo", overrides)
    cfg = _config(shards, run_dir, steps, [*overrides, f"train.val_every={interval}",
                                           f"train.checkpoint_every={interval}", f"optim.band_check_every={interval}"])
    trainer = Trainer(cfg)
    profile = cProfile.Profile(time.process_time)
    try:
        profile.runcall(trainer.train)
    finally:
        destroy_distributed()
    stats = pstats.Stats(profile)
    parts = {name: round(_cumulative(stats, where)[0] / steps * 1000, 1) for name, where in PARTS.items()}
    per_call = {}
    for name, where in PER_CALL.items():
        seconds, calls = _cumulative(stats, where)
        per_call[name] = round(seconds / max(calls, 1), 3)
    every = {"validation": recipe.train.val_every, "checkpoint": recipe.train.checkpoint_every,
             "band_check": recipe.optim.band_check_every}
    amortised = {name: round(per_call[name] / every[name] * 1000, 1) for name in per_call}
    return {"parts_cpu_ms_per_step": parts, "per_call_cpu_s": per_call,
            "amortised_cpu_ms_per_step": amortised}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("shards", help="a curated output dir of the demo's footage")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--overrides", nargs="*", default=[], help="key=value overrides of the demo recipe")
    args = parser.parse_args()
    if args.steps <= WARM_STEPS + 1:
        parser.error(f"--steps must be above {WARM_STEPS + 1}: the first {WARM_STEPS} and the last are not steady")
    setup_logging("WARNING")
    with tempfile.TemporaryDirectory() as scratch:
        root = pathlib.Path(scratch)
        all_cores = timed_run(args.shards, root / "all_cores", args.steps,
                              [*args.overrides, f"train.cpu_threads={available_cores()}"])
        print("all_cores", all_cores, flush=True)
        automatic = timed_run(args.shards, root / "automatic", args.steps, [*args.overrides, "train.cpu_threads=0"])
        print("automatic", automatic, flush=True)
        profile = profiled_run(args.shards, root / "profiled", args.steps, [*args.overrides, "train.cpu_threads=0"])
        print("profile", profile, flush=True)
    write_result("demo_step_cost", {**automatic, **profile, "steps": args.steps}, all_cores,
                 ratio=all_cores["cpu_s_per_step"] / automatic["cpu_s_per_step"], target=None)


if __name__ == "__main__":
    main()
