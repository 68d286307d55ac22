"""`mvideo plan [recipe=NAME] [parallel=LAYOUT] [plan.gpu=h100-80gb] [plan.gpus=N]`: will it fit?

Prints the per-GPU memory of the configured layout part by part, then layouts over the same GPUs
that fit, cheapest first; writes the same rows to plan.csv and plan.png. Exits 1 when the
configured layout does not fit, so scripts can check a recipe before submitting it.
"""
from __future__ import annotations

import pathlib

from megatron_video.config.schema import RootConfig

DEFAULT_RECIPE = "default"


def run(cfg: RootConfig) -> int:
    from megatron_video.plan import report
    from megatron_video.plan.layouts import built_features, layout_from_config, suggest, workload_from_config
    from megatron_video.plan.memory import plan_memory

    work = workload_from_config(cfg)
    layout = layout_from_config(cfg)
    built = built_features()
    capacity = cfg.plan.capacity
    asked = plan_memory(cfg.model, work, layout, built)
    print(f"model: {cfg.model.hidden} wide, {cfg.model.layers} layers; sample: {work.video_tokens} video + "
          f"{work.text_tokens} text tokens\n")
    print(report.breakdown(asked, capacity, cfg.plan.gpu))
    suggestions = suggest(cfg, work, layout, capacity, built, cfg.plan.suggestions)
    print(f"\nlayouts over {layout.gpus} GPU(s) that fit a {cfg.plan.gpu} (GiB per GPU), cheapest first:")
    print(report.table(suggestions, capacity) if suggestions else "  none: use more GPUs or shorter clips")
    rows = [asked, *suggestions]
    folder = pathlib.Path(cfg.plan.output or pathlib.Path(cfg.run.output_dir) / "plan")
    csv_path = report.write_csv(rows, capacity, folder / "plan.csv")
    png_path = report.write_png(rows, capacity, cfg.plan.gpu, folder / "plan.png")
    print(f"\nwrote {csv_path} and {png_path}")
    return 0 if asked.fits(capacity) else 1
