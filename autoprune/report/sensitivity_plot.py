"""Plots of search results (matplotlib, written as PNG files)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from search_spaces.ground.io import atomic_write

TABLE, PLOT = "sensitivity.csv", "sensitivity.png"


def write_sensitivity(table: pd.DataFrame, baseline: float, directory: Path) -> tuple[Path, Path]:
    """``sensitivity.csv`` and ``sensitivity.png`` in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write(directory / TABLE, lambda tmp: table.to_csv(tmp, index=False))
    return directory / TABLE, plot_sensitivity(table, directory / PLOT, baseline=baseline)


def plot_sensitivity(table: pd.DataFrame, path: str | Path, *, baseline: float | None = None) -> Path:
    """One accuracy-vs-ratio curve per group (Distiller-style sensitivity plot), written as a PNG file."""
    figure = draw_sensitivity(table, baseline=baseline)
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=120))
    plt.close(figure)
    return Path(path)


def draw_sensitivity(table: pd.DataFrame, *, baseline: float | None = None) -> Figure:
    """The sensitivity plot as a matplotlib figure; both axes in percent, with as many decimals as the range needs
    (:class:`matplotlib.ticker.PercentFormatter` with automatic decimals), so no two ticks read the same."""
    figure, axis = plt.subplots(figsize=(8, 5))
    for group, rows in table.groupby("group", sort=False):
        rows = rows.sort_values("ratio")
        axis.plot(rows["ratio"], rows["accuracy"], marker="o", label=str(group))
    if baseline is not None:
        axis.axhline(baseline, color="black", linestyle="--", linewidth=1, label="unpruned")
    axis.set_xlabel("removed from the group (%): its channels, or its weights in an element run")
    axis.set_ylabel("validation accuracy (%)")
    axis.xaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    axis.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    axis.set_title("sensitivity: each group pruned alone")
    axis.legend(fontsize=7, ncol=2 if table["group"].nunique() > 12 else 1, loc="lower left")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    return figure
