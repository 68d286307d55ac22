"""Render BENCHMARKS.md from benchmarks/results/*.json (run after any benchmark)."""
from __future__ import annotations

import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent
HEADER = """# Benchmarks

Every figure comes from a script in `benchmarks/` that measures the claim side by side with its
baseline in one run and writes `benchmarks/results/<name>.json`. Absolute times count only on the
GPU machine; CPU figures are ratios. Regenerate this page with `python benchmarks/report.py`.

| benchmark | device | date | headline (ratio) | target | met | key metrics | baseline |
| --- | --- | --- | ---: | ---: | :---: | --- | --- |
"""


def _short(values: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items() if not isinstance(v, (list, dict)))


def _met(ratio: float, target) -> str:
    if not isinstance(target, (int, float)):
        return "-"
    return "yes" if ratio >= target else "no"


def render(results_dir: pathlib.Path = ROOT / "results") -> str:
    rows = []
    for path in sorted(results_dir.glob("*.json")):
        r = json.loads(path.read_text())
        rows.append(f"| {r['name']} | {r['device']} | {r['date']} | {r['ratio']} | {r['target']} | "
                    f"{_met(r['ratio'], r['target'])} | {_short(r['metrics'])} | {_short(r['baseline'])} |")
    notes = ROOT / "notes.md"
    return HEADER + "\n".join(rows) + "\n" + ("\n" + notes.read_text() if notes.exists() else "")


if __name__ == "__main__":
    (ROOT.parent / "BENCHMARKS.md").write_text(render())
    print((ROOT.parent / "BENCHMARKS.md").read_text())
