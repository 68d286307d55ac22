"""demo_fidelity: does a trained demo run's sample show its own footage, and which sampler shows it best?

For every training caption of a finished `mvideo demo` (or `mvideo train recipe=demo`) run, one
sample per sampler setting (steps, guidance, solver) is compared by PSNR with one window of every
training clip: the best and mean PSNR against its own caption's clips and against the others'
(megatron_video/demo/fidelity.py). The baseline is the demo recipe's own sampler setting; the ratio
is the best setting's margin (own mean PSNR minus others' mean PSNR, in dB, averaged over the
captions) and the target a positive margin. One Euler step from pure noise returns the model's
estimate of the clean clip given the caption (the flow's x0 prediction at t = 1), the blurry mean
of that caption's clips: it is in the sweep as the reference a sharper sampler has to beat.

    python benchmarks/demo_fidelity.py outputs/demo [--settings 1,0,euler 10,1,euler 30,3,euler 30,3,euler,3]
        [--overrides data.frames=4 ...]   (the overrides the run was trained with)
"""
from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from benchmarks.common import write_result
from megatron_video.config.loader import load_config
from megatron_video.demo.fidelity import frames_fidelity, training_windows
from megatron_video.inference.generator import GenerationRequest
from megatron_video.inference.sample import start_sampling


def setting_of(text: str) -> tuple[int, float, str, float]:
    """"steps,guidance,solver[,shift]": shift is the sampling time grid's (1 = uniform)."""
    steps, guidance, solver, *shift = text.split(",")
    return int(steps), float(guidance), solver, float(shift[0]) if shift else 1.0


def setting_key(steps: int, guidance: float, solver: str, shift: float) -> str:
    return f"{steps}_steps_g{guidance:g}_{solver}" + (f"_shift{shift:g}" if shift != 1.0 else "")


def sweep(run_dir: str, settings: list[tuple[int, float, str, float]], seeds: int, shards: str,
          overrides: list[str]) -> dict[str, dict]:
    cfg = load_config("demo", [f"run.output_dir={run_dir}", f"sample.checkpoint={run_dir}",
                               f"data.shards={shards or pathlib.Path(run_dir) / 'curated'}", *overrides])
    generator = start_sampling(cfg)
    windows = training_windows(cfg.data, cfg.run.seed)
    captions = sorted({caption for caption, _ in windows})
    results = {}
    for steps, guidance, solver, shift in settings:
        scores, margins = [], {}
        for caption in captions:
            for seed in range(seeds):
                request = GenerationRequest(prompt=caption, frames=cfg.sample.frames, height=cfg.sample.height,
                                            width=cfg.sample.width, steps=steps, guidance=guidance, solver=solver,
                                            seed=seed, shift=shift)
                fidelity = frames_fidelity(generator.generate(request), caption, windows)
                scores.append((max(fidelity.own), max(fidelity.others), np.mean(fidelity.own),
                               np.mean(fidelity.others)))
                margins.setdefault(caption, []).append(fidelity.margin)
        own_best, other_best, own_mean, other_mean = (float(v) for v in np.mean(scores, axis=0))
        results[setting_key(steps, guidance, solver, shift)] = {
            "own_best_db": round(own_best, 2), "other_best_db": round(other_best, 2),
            "own_mean_db": round(own_mean, 2), "other_mean_db": round(other_mean, 2),
            "margin_db": round(own_mean - other_mean, 2),
            "own_best_wins": f"{sum(s[0] > s[1] for s in scores)}/{len(scores)}",
            "caption_margin_db": {caption: round(float(np.mean(m)), 2) for caption, m in margins.items()}}
        key = setting_key(steps, guidance, solver, shift)
        print(f"{key}: {results[key]}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--settings", nargs="+", type=setting_of,
                        default=[(1, 0.0, "euler", 1.0), (10, 1.0, "euler", 1.0), (30, 3.0, "euler", 1.0),
                                 (30, 1.0, "ab2", 1.0)])
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--shards", default="", help="the curated output trained on (default: RUN_DIR/curated)")
    parser.add_argument("--overrides", nargs="*", default=[], help="key=value overrides the run was trained with")
    args = parser.parse_args()
    demo = load_config("demo", args.overrides).sample
    baseline_setting = (demo.steps, demo.guidance, demo.solver, demo.shift)
    settings = list(dict.fromkeys([baseline_setting, *args.settings]))
    results = sweep(args.run_dir, settings, args.seeds, args.shards, args.overrides)
    baseline_key = setting_key(*baseline_setting)
    best = max(results, key=lambda key: results[key]["margin_db"])
    write_result("demo_fidelity", {"settings": results, "best": best}, {baseline_key: results[baseline_key]},
                 ratio=results[best]["margin_db"], target="margin_db > 0")


if __name__ == "__main__":
    main()
