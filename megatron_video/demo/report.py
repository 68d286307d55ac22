"""report.md of a demo run: what came in, what came out, how long each stage took, the loss drop."""
from __future__ import annotations

import pathlib
import platform
from typing import Any

import torch

from megatron_video.demo.fidelity import Fidelity, fidelity_table


def write_report(out_dir: pathlib.Path, timings: dict[str, float], curation: Any, training: Any,
                 samples: list[pathlib.Path], catalog_rows: int, per_source: dict[str, int],
                 device: torch.device, fidelity: list[Fidelity]) -> pathlib.Path:
    first, last = training.loss_drop()
    planned = (f" of {training.planned_steps} planned from the step rate to fit the time limit, LR cooldown included"
               if training.planned_steps else "")
    device_name = torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() or platform.machine()
    lines = [
        "# megatron-video demo report",
        "",
        f"Device: {device.type} ({device_name}), torch {torch.__version__}.",
        "",
        "## Stages",
        "",
        "| stage | seconds |",
        "| --- | ---: |",
        *[f"| {name} | {seconds:.1f} |" for name, seconds in timings.items()],
        f"| **total** | **{sum(timings.values()):.1f}** |",
        "",
        "## Curation",
        "",
        (f"Inputs by status: {dict(curation.inputs_by_status)}. Clips written: {curation.clips_written} "
         f"in {len(curation.shard_paths)} shard(s); catalog rows: {catalog_rows}."),
        "",
        "| source | clips |",
        "| --- | ---: |",
        *[f"| {source} | {count} |" for source, count in sorted(per_source.items())],
        "",
        "Curation stage seconds (summed over workers): "
        + ", ".join(f"{k} {v:.1f}" for k, v in curation.metrics.seconds().items()) + ".",
        "",
        "![dataset grid](dataset_grid.png)",
        "",
        "## Training",
        "",
        (f"Steps {training.start_step}..{training.steps}{planned}, {training.s_per_step:.3f} s/step. "
         f"Loss, mean of the first 10% of steps: {first:.4f}; of the last 10%: {last:.4f} "
         f"(a {100 * (1 - last / first):.0f}% drop). Validation loss at the end: {training.val_loss:.4f}. "
         f"muP band warnings: {training.band_warnings}."),
        "",
        "![loss curve](loss_curve.png)",
        "",
        "## Samples",
        "",
        *[f"- `{p.relative_to(out_dir)}`" for p in samples],
        "",
        "Frames of the first sample:",
        "",
        "![sample](sample_strip.png)",
        "",
        "## Does each sample show its own footage?",
        "",
        ("Each prompt's sample against one window of every training clip (as the loader cuts them): PSNR "
         "against the clips of its own caption and against those of the other captions. The margin is the "
         "own mean minus the others' mean; positive means the sample is closer to its own footage."),
        "",
        *fidelity_table(fidelity),
        "",
        "![samples above their closest own training clip](fidelity_strip.png)",
        "",
    ]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines))
    return path
