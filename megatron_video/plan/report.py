"""The plan as a text table, a CSV file and a bar chart: one row per layout, one column per part."""
from __future__ import annotations

import csv
import pathlib

from megatron_video.plan.memory import GIB, MemoryPlan

COLUMNS = ("parameters", "gradients", "optimizer", "encoders", "buffers", "inputs", "activations", "transient",
           "peak")


def _values(plan: MemoryPlan) -> dict[str, int]:
    return {name: getattr(plan, name) for name in COLUMNS}


def _note(plan: MemoryPlan, capacity: int) -> str:
    verdict = "fits" if plan.fits(capacity) else "DOES NOT FIT"
    if plan.pending:
        verdict += f"; estimate for a feature not yet built: {', '.join(plan.pending)}"
    return verdict


def breakdown(plan: MemoryPlan, capacity: int, gpu: str) -> str:
    """The asked-for layout, part by part."""
    lines = [(f"layout {plan.layout.describe()} on {plan.layout.gpus} GPU(s); pipeline stage {plan.stage} "
              f"holds {plan.parameters_count / 1e9:.3f}B parameters"),
             f"  {'part':<64} {'GiB':>8}"]
    lines += [f"  {name:<64} {value / GIB:>8.2f}" for name, value in plan.rows()]
    lines.append(f"  {'one block, one micro batch (activations)':<64} {plan.layer_activations / GIB:>8.2f}")
    lines.append(f"  {gpu} usable: {capacity / GIB:.2f} GiB -> {_note(plan, capacity)}")
    return "\n".join(lines)


def table(plans: list[MemoryPlan], capacity: int) -> str:
    """Several layouts side by side, in GiB per GPU."""
    head = f"{'layout':<52}" + "".join(f"{c[:11]:>12}" for c in COLUMNS) + "  verdict"
    lines = [head]
    for plan in plans:
        values = _values(plan)
        lines.append(f"{plan.layout.describe():<52}" + "".join(f"{values[c] / GIB:>12.2f}" for c in COLUMNS)
                     + f"  {_note(plan, capacity)}")
    return "\n".join(lines)


def write_csv(plans: list[MemoryPlan], capacity: int, path: pathlib.Path) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["layout", "gpus", "stage", *[f"{c}_gib" for c in COLUMNS], "capacity_gib", "fits",
                         "pending"])
        for plan in plans:
            values = _values(plan)
            writer.writerow([plan.layout.describe(), plan.layout.gpus, plan.stage,
                             *[f"{values[c] / GIB:.3f}" for c in COLUMNS], f"{capacity / GIB:.3f}",
                             plan.fits(capacity), " ".join(plan.pending)])
    return path


def write_png(plans: list[MemoryPlan], capacity: int, gpu: str, path: pathlib.Path) -> pathlib.Path:
    """Stacked bars of the parts of each layout's peak, with the GPU's usable memory as a line."""
    from megatron_video.plots import plt, save_figure

    parts = COLUMNS[:-1]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(plans) + 3), 5.0))
    labels = [p.layout.describe().replace(" ", "\n") for p in plans]
    bottom = [0.0] * len(plans)
    for part in parts:
        heights = [getattr(p, part) / GIB for p in plans]
        ax.bar(labels, heights, bottom=bottom, label=part)
        bottom = [b + h for b, h in zip(bottom, heights)]
    ax.axhline(capacity / GIB, color="black", linestyle="--", label=f"{gpu} usable")
    ax.set_ylabel("GiB per GPU (fullest pipeline stage)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.tick_params(axis="x", labelsize=7)
    return save_figure(fig, path)
