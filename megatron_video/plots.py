"""Figures for headless runs: one way to lay out, write and release a matplotlib figure."""
from __future__ import annotations

import pathlib

import matplotlib

matplotlib.use("Agg")  # no display on training nodes or CI
import matplotlib.pyplot as plt


def save_figure(fig: plt.Figure, path: str | pathlib.Path, dpi: int = 100) -> pathlib.Path:
    """Tight layout, write `path` (creating its folder), close the figure; returns the path."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
