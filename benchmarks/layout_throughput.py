"""layout_throughput: the 7B preset's training step under TP x CP x PP x DP layouts on one 8-GPU
host, and the memory planner's estimate of each layout against its measured peak.

    torchrun --nproc-per-node 8 benchmarks/layout_throughput.py

Each row is the trainer's optimizer step (benchmarks/layout_step.py) at 32K video tokens
(latent 16 x 64 x 128) + 512 text tokens, one sample per microbatch, bf16 autocast; pipelined
layouts run 8 microbatches (1F1B, or interleaved where virtual_pipeline is set), the others one.
Per-GPU TFLOP/s by the project's formula. The 7B preset's 37 layers split evenly into no pipeline:
a pipelined row trains the preset with its layers cut to the largest multiple of the virtual stages
(36 for 2 or 4), and says so (`layers`). A layout the planner says does not fit an H200 is
reported, not run. The headline ratio is the largest |planned / measured peak - 1| over the rows
that ran (the planner's target is 0.15); the fastest layout is named in the metrics. A world of
other than 8 ranks keeps the layouts whose model-parallel size divides it.

`--tiny` runs the same code on the CPU (gloo, float32): the demo preset, layouts of 2 ranks.
"""
from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from benchmarks.common import write_result
from benchmarks.layout_step import StepCase, measure, start_world
from megatron_video.model import load_preset
from megatron_video.parallel.state import ParallelConfig, destroy_distributed

PIPELINED = 8  # microbatches per step under pipeline parallelism
LAYOUTS = {  # name: ParallelConfig (data parallel is what remains of the world)
    "tp8_sp": ParallelConfig(tensor=8, sequence_parallel=True),
    "tp4_sp_cp2": ParallelConfig(tensor=4, context=2, sequence_parallel=True),
    "tp2_sp_cp4": ParallelConfig(tensor=2, context=4, sequence_parallel=True),
    "tp4_sp_pp2": ParallelConfig(tensor=4, pipeline=2, sequence_parallel=True, microbatches=PIPELINED),
    "tp2_sp_cp2_pp2": ParallelConfig(tensor=2, context=2, pipeline=2, sequence_parallel=True,
                                     microbatches=PIPELINED),
    "tp2_sp_pp2_vpp2": ParallelConfig(tensor=2, pipeline=2, virtual_pipeline=2, sequence_parallel=True,
                                      microbatches=PIPELINED),
    # data parallel 2 on 8 GPUs, the optimizer state sharded over it
    "tp4_sp_distopt": ParallelConfig(tensor=4, sequence_parallel=True, distributed_optimizer=True),
    "tp2_sp_cp2_distopt": ParallelConfig(tensor=2, context=2, sequence_parallel=True, distributed_optimizer=True),
}
TINY_LAYOUTS = {  # two ranks
    "tp2_sp": ParallelConfig(tensor=2, sequence_parallel=True),
    "pp2_vpp2": ParallelConfig(pipeline=2, virtual_pipeline=2, microbatches=4),
    "dp2_distopt": ParallelConfig(distributed_optimizer=True),
}
LATENT, TINY_LATENT = (16, 64, 128), (2, 8, 16)
TARGET = 0.15


def main(argv: list[str] | None = None) -> pathlib.Path | None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="demo preset, float32, gloo on the CPU (smoke test)")
    parser.add_argument("--preset", default="7b")
    parser.add_argument("--layouts", nargs="+", default=None, help=f"names from {list(LAYOUTS)}")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per row (median)")
    parser.add_argument("--results-dir", type=pathlib.Path, default=None)
    args = parser.parse_args(argv)
    device = start_world(args.tiny)
    world = dist.get_world_size()
    cfg = load_preset("demo" if args.tiny else args.preset)
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    layouts = TINY_LAYOUTS if args.tiny else LAYOUTS
    chosen = {name: layouts[name] for name in args.layouts or layouts}
    rows = []
    for name, parallel in chosen.items():
        if world % parallel.model_parallel_size():
            continue
        stages = parallel.pipeline * (parallel.virtual_pipeline or 1)
        staged = dataclasses.replace(cfg, layers=cfg.layers - cfg.layers % stages)
        row = measure(staged, StepCase(name=name, parallel=parallel, latent=TINY_LATENT if args.tiny else LATENT),
                      device, dtype, steps=args.steps)
        rows.append(row)
        if dist.get_rank() == 0:
            print(row, flush=True)
    ran = [r for r in rows if r["status"] == "ok"]
    errors = [abs(r["plan_relative_error"]) for r in ran if "plan_relative_error" in r]
    fastest = max(ran, key=lambda r: r["tflops_per_gpu"])["name"] if ran else None
    path = None
    if dist.get_rank() == 0:
        path = write_result("layout_throughput",
                            metrics={"rows": rows, "fastest": fastest, "preset": "demo" if args.tiny else args.preset,
                                     "dtype": str(dtype), "world": world, "steps": args.steps,
                                     "compared": "planned vs measured peak" if errors else "nothing (no CUDA peak)"},
                            baseline={"planned_peak": "megatron_video.plan.memory.plan_memory of each layout"},
                            ratio=max(errors) if errors else 0.0,
                            target=f"planner: |planned / measured peak - 1| <= {TARGET} in every layout",
                            results_dir=args.results_dir, gpus=world if device.type == "cuda" else 1)
    return path


if __name__ == "__main__":
    main()
    destroy_distributed()
