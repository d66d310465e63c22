"""Plots of search results (matplotlib, written as PNG files)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from search_spaces.ground.io import atomic_write

TABLE, PLOT = "sensitivity.csv", "sensitivity.png"


def write_sensitivity(table: pd.DataFrame, baseline: float, directory: Path) -> tuple[Path, Path]:
    """``sensitivity.csv`` and ``sensitivity.png`` in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write(directory / TABLE, lambda tmp: table.to_csv(tmp, index=False))
    return directory / TABLE, plot_sensitivity(table, directory / PLOT, baseline=baseline)


def plot_sensitivity(table: pd.DataFrame, path: str | Path, *, baseline: float | None = None) -> Path:
    """One accuracy-vs-ratio curve per group (Distiller-style sensitivity plot)."""
    figure, axis = plt.subplots(figsize=(8, 5))
    for group, rows in table.groupby("group", sort=False):
        rows = rows.sort_values("ratio")
        axis.plot(rows["ratio"], rows["accuracy"], marker="o", label=str(group))
    if baseline is not None:
        axis.axhline(baseline, color="black", linestyle="--", linewidth=1, label="unpruned")
    axis.set_xlabel("fraction of the group's channels removed")
    axis.set_ylabel("validation accuracy")
    axis.set_title("sensitivity: each group pruned alone")
    axis.legend(fontsize=7, ncol=2 if table["group"].nunique() > 12 else 1, loc="lower left")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=120))
    plt.close(figure)
    return Path(path)
