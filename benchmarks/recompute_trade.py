"""recompute_trade: what each train.recompute setting saves in memory and costs in step time.

Forward + backward of the 1B preset at 32K video tokens in bf16, one GPU, for every setting in one
run: none, attention (RoPE, value residual and the attention kernel rerun in backward), mlp (the
gated activation) and block (whole blocks). Per setting: step time, peak memory, and both relative
to no recompute. ratio = peak memory without recompute / with attention recompute (the selective
setting the issue asks to measure); no target is named, the trade is reported. `--quick` runs a
tiny model on the CPU (times only: the CPU has no peak-memory counter).
"""
from __future__ import annotations

import gc
import pathlib
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from benchmarks.common import model_benchmark_args, time_call, write_result
from benchmarks.dit_step import step_setting, training_step
from megatron_video.model.fp8.settings import FP8_OFF
from megatron_video.model.recompute import RECOMPUTE


def main(argv: list[str] | None = None) -> pathlib.Path:
    args = model_benchmark_args(__doc__, argv)
    device, preset, latent, dtype, repeats = step_setting(args)
    cuda = device.type == "cuda"
    rows = {}
    for mode in RECOMPUTE:
        step, model, _ = training_step(preset, latent, dtype, device, FP8_OFF, recompute=mode)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        seconds = time_call(step, repeats=repeats, warmup=1, sync=torch.cuda.synchronize if cuda else None)
        rows[mode] = {"step_s": round(seconds, 5),
                      "max_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3) if cuda else None}
        del step, model
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    for row in rows.values():
        row["time_vs_none"] = round(row["step_s"] / rows["none"]["step_s"], 4)
        if cuda:
            row["memory_vs_none"] = round(row["max_memory_gib"] / rows["none"]["max_memory_gib"], 4)
    ratio = rows["none"]["max_memory_gib"] / rows["attention"]["max_memory_gib"] if cuda else 0.0
    return write_result("recompute_trade", metrics={"preset": preset, "latent": list(latent), "dtype": str(dtype),
                                                    "settings": rows},
                        baseline={"none": rows["none"]}, ratio=ratio, target=None, results_dir=args.results_dir)


if __name__ == "__main__":
    main()
