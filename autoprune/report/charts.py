"""The report's charts as Plotly figures (plain dicts: ``{"data": [traces], "layout": {...}}``) from a trials table.

Every chart has axis titles with units; every trial point carries its trial id, shown on hover.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from autoprune.study.trials import PHASE_COLUMNS, full_fidelity_ok

Figure = dict[str, Any]
COLORS = {"feasible": "#1f77b4", "over": "#ff7f0e", "early": "#9aa5b1", "front": "#2ca02c", "best": "#d62728",
          "budget": "#6e7781", "unpruned": "#c9d1d9"}
# decimals of the finest percent tick labels (ticks 0.01 percentage points apart); finer spacings get one more
PERCENT_DECIMALS = 3
PHASES = {"prune_seconds": "prune + count", "recalibrate_seconds": "BN recalibration",
          "finetune_seconds": "finetune", "validate_seconds": "validation"}


def layout(x_title: str, y_title: str, **extra: Any) -> dict[str, Any]:
    """The shared look: axis titles, legend above the plot, compact margins."""
    return {
        "xaxis": {"title": {"text": x_title}, "automargin": True, **extra.pop("xaxis", {})},
        "yaxis": {"title": {"text": y_title}, "automargin": True, **extra.pop("yaxis", {})},
        "legend": {"orientation": "h", "x": 0, "y": 1.02, "yanchor": "bottom"},
        "margin": {"l": 60, "r": 44, "t": 40, "b": 56}, "modebar": {"orientation": "v"}, "hovermode": "closest",
        **extra,
    }


def percent_axis(**extra: Any) -> dict[str, Any]:
    """An axis of fractions shown as percents whose tick labels carry as many decimals as the tick spacing needs.

    plotly.js picks the spacing (``dtick``) from the data's range and the chart's size; each ``tickformatstops``
    entry gives the d3 format for one band of spacings (the first that matches wins), so ticks 0.5% apart read
    98.5%, 99.0%, 99.5% rather than 99%, 99%, 100%, and a label is never rounded onto a neighbour's value.
    """
    stops = [{"dtickrange": [10.0 ** -(2 + decimals) * 0.999, None], "value": f".{decimals}%"}
             for decimals in range(PERCENT_DECIMALS + 1)]
    return {"tickformat": f".{PERCENT_DECIMALS + 1}%", "tickformatstops": stops, **extra}


def percent_format(dtick: float) -> str:
    """The d3 format :func:`percent_axis` gives ticks ``dtick`` apart (plotly.js's first matching stop)."""
    axis = percent_axis()
    for stop in axis["tickformatstops"]:
        low, high = stop["dtickrange"]
        if (low is None or dtick >= low) and (high is None or dtick <= high):
            return stop["value"]
    return axis["tickformat"]


def flops_unit(largest: float) -> tuple[float, str]:
    """A divisor and unit name that keep FLOPs counts readable."""
    for divisor, unit in ((1e9, "GFLOPs"), (1e6, "MFLOPs"), (1e3, "kFLOPs")):
        if largest >= divisor:
            return divisor, unit
    return 1.0, "FLOPs"


def kept_channels_figure(names: Sequence[str], channels: Sequence[int], kept: Sequence[int], *,
                         element: bool = False, heads: Collection[str] = ()) -> Figure:
    """Channels kept per group by the best policy, beside each group's unpruned width; with ``element``, the weights
    kept (non-zero) per weight tensor beside its element count. Groups in ``heads`` (attention modules pruned by
    whole heads) count heads and are labelled ``name [heads]``."""
    unit = "weights" if element else "channels"
    units = ["heads" if n in heads else unit for n in names]
    labels = [f"{n} [heads]" if n in heads else n for n in names]
    share = [[f"{k / c:.0%}" if c else "", u] for k, c, u in zip(kept, channels, units, strict=True)]
    x_title, y_title = (("weight tensor (network order)", "kept weights (non-zero count)") if element
                        else ("channel group (network order)",
                              "output channels (count; heads for [heads])" if heads else "output channels (count)"))
    shown = "%{customdata[1]}" if heads else unit  # one unit for every bar unless some count heads
    return {
        "data": [
            {"type": "bar", "name": "unpruned", "x": labels, "y": list(channels), "customdata": share,
             "marker": {"color": COLORS["unpruned"]},
             "hovertemplate": f"%{{x}}<br>unpruned: %{{y}} {shown}<extra></extra>"},
            {"type": "bar", "name": "kept (best policy)", "x": labels, "y": list(kept), "customdata": share,
             "marker": {"color": COLORS["feasible"]},
             "hovertemplate": f"%{{x}}<br>kept: %{{y}} {shown} (%{{customdata[0]}})<extra></extra>"},
        ],
        "layout": layout(x_title, y_title, barmode="group", xaxis={"tickangle": -45}),
    }


@dataclass(frozen=True)
class CostAxis:
    """The cost an accuracy-vs-cost chart puts on its x axis.

    Attributes:
        column: the trials table's column.
        divisor: what the column is divided by for display (1 for fractions).
        title: the axis title, with its unit.
        hover: how a point's cost reads on hover (a plotly.js template of ``%{x}``).
        limit: the budget line's legend name.
        axis: extra plotly.js axis settings (a percent format for fractions).
    """

    column: str
    divisor: float
    title: str
    hover: str
    limit: str
    axis: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def flops(cls, trials: pd.DataFrame) -> CostAxis:
        """FLOPs of the pruned model in a unit that keeps the trials' counts readable (channel pruning)."""
        ok = trials[trials["status"] == "ok"]
        divisor, unit = flops_unit(float(ok["flops"].max()) if len(ok) else 0.0)
        return cls("flops", divisor, f"{unit} of the pruned model (at the example inputs)", f"%{{x:.4g}} {unit}",
                   "budget (FLOPs limit)")

    @classmethod
    def nonzeros(cls) -> CostAxis:
        """The share of non-zero weights kept (element pruning: its FLOPs and stored parameters never change)."""
        return cls("nonzeros_ratio", 1.0, "non-zero weights kept (% of the unpruned model's)",
                   "%{x:.2%} of the non-zero weights", "budget (non-zeros limit)", percent_axis())


def accuracy_flops_figure(trials: pd.DataFrame, *, fidelity: int, pareto_ids: Sequence[int], best_id: int | None,
                          flops_limit: float | None, cost: CostAxis | None = None) -> Figure:
    """Accuracy vs cost (FLOPs, or ``cost``) of every scored trial, the Pareto front, the chosen trial and the budget
    line (``flops_limit``, in ``cost``'s column's terms)."""
    cost = cost if cost is not None else CostAxis.flops(trials)
    ok = trials[trials["status"] == "ok"]
    full = ok["trial_id"].isin(full_fidelity_ok(trials, fidelity)["trial_id"])
    groups = (("feasible", "within budget", full & ok["feasible"]), ("over", "over budget", full & ~ok["feasible"]),
              ("early", "stopped early (lower fidelity)", ~full))
    data = [_points(ok[mask], cost, name, COLORS[key]) for key, name, mask in groups if mask.any()]
    front = ok.set_index("trial_id").loc[list(pareto_ids)].reset_index()
    if len(front):
        data.append(_front(front, cost))
    if best_id is not None and best_id in set(ok["trial_id"]):
        chosen = _points(ok[ok["trial_id"] == best_id], cost, f"exported (trial {best_id})", COLORS["best"])
        data.append({**chosen, "marker": {"color": COLORS["best"], "size": 14, "symbol": "star"}})
    if flops_limit is not None and len(ok):
        low, high = float(ok["accuracy"].min()), float(ok["accuracy"].max())
        data.append({"type": "scatter", "mode": "lines", "name": cost.limit,
                     "x": [flops_limit / cost.divisor] * 2, "y": [low, high],
                     "line": {"color": COLORS["budget"], "dash": "dash"},
                     "hovertemplate": f"budget: {cost.hover}<extra></extra>"})
    return {"data": data, "layout": layout(cost.title, "validation accuracy (%)", xaxis=dict(cost.axis),
                                           yaxis=percent_axis())}


def _front(front: pd.DataFrame, cost: CostAxis) -> dict[str, Any]:
    """The Pareto front as a step line through its trials; a front of one trial (nothing to connect) as a ring
    around it, so that its legend entry matches something drawn."""
    trace = _points(front, cost, "Pareto front", COLORS["front"])
    if len(front) == 1:
        return {**trace, "marker": {"color": COLORS["front"], "size": 20, "symbol": "circle-open",
                                    "line": {"width": 2}}}
    return {**trace, "mode": "lines+markers", "line": {"shape": "hv", "color": COLORS["front"]}}


def _points(rows: pd.DataFrame, cost: CostAxis, name: str, color: str) -> dict[str, Any]:
    return {
        "type": "scatter", "mode": "markers", "name": name, "x": (rows[cost.column] / cost.divisor).tolist(),
        "y": rows["accuracy"].tolist(), "marker": {"color": color, "size": 8},
        "customdata": [[int(t), int(f), int(p)] for t, f, p in zip(rows["trial_id"], rows["fidelity"], rows["params"],
                                                                   strict=True)],
        "hovertemplate": (f"trial %{{customdata[0]}}<br>accuracy %{{y:.2%}}<br>{cost.hover}<br>"
                          "params %{customdata[2]:,}<br>finetune steps %{customdata[1]}<extra>" + name + "</extra>"),
    }


def best_so_far_figures(trials: pd.DataFrame, *, fidelity: int) -> tuple[Figure, Figure]:
    """The best feasible full-fidelity accuracy after each evaluation, against evaluations and against wall time."""
    done = finish_order(trials)
    scored = done["trial_id"].isin(full_fidelity_ok(trials, fidelity)["trial_id"]) & done["feasible"].astype(bool)
    accuracy = done["accuracy"].where(scored)
    best = accuracy.cummax().ffill()  # cummax leaves the gaps of unscored trials
    clock, clock_title = _wall_clock(done)
    ids = done["trial_id"].astype(int).tolist()
    figures = []
    for x, title in ((list(range(1, len(done) + 1)), "evaluations finished (count)"), (clock, clock_title)):
        data = [
            {"type": "scatter", "mode": "markers", "name": "feasible trial", "x": x, "y": accuracy.tolist(),
             "customdata": ids, "marker": {"color": COLORS["feasible"], "size": 6, "opacity": 0.5},
             "hovertemplate": "trial %{customdata}<br>accuracy %{y:.2%}<extra></extra>"},
            {"type": "scatter", "mode": "lines", "name": "best so far", "x": x, "y": best.tolist(), "customdata": ids,
             "line": {"shape": "hv", "color": COLORS["best"]},
             "hovertemplate": "after trial %{customdata}<br>best %{y:.2%}<extra></extra>"},
        ]
        figures.append({"data": data, "layout": layout(title, "best feasible validation accuracy (%)",
                                                       yaxis=percent_axis())})
    return figures[0], figures[1]


def finish_order(trials: pd.DataFrame) -> pd.DataFrame:
    """Trials in the order they finished (trial-id order for runs that did not record the time)."""
    if trials["finished_at"].notna().all():
        return trials.sort_values(["finished_at", "trial_id"], kind="stable").reset_index(drop=True)
    return trials.reset_index(drop=True)


def _wall_clock(done: pd.DataFrame) -> tuple[list[float], str]:
    """Minutes since the search's first evaluation started, or summed evaluation time when finish times are missing."""
    if len(done) and done["finished_at"].notna().all():
        start = float((done["finished_at"] - done["seconds"].fillna(0)).min())
        return ((done["finished_at"] - start) / 60).tolist(), "wall time since the first evaluation started (min)"
    return (done["seconds"].fillna(0).cumsum() / 60).tolist(), "evaluation time, summed (min)"


def time_figure(trials: pd.DataFrame) -> Figure:
    """Where each candidate's evaluation time went: prune, recalibrate, finetune, validate, and the rest."""
    ids = trials["trial_id"].astype(int).tolist()
    phases = trials[list(PHASE_COLUMNS)].fillna(0)
    other = (trials["seconds"].fillna(0) - phases.sum(axis=1)).clip(lower=0)
    columns = [(PHASES[c], phases[c]) for c in PHASE_COLUMNS] + [("other", other)]
    data = [{"type": "bar", "name": name, "x": ids, "y": values.tolist(),
             "hovertemplate": f"trial %{{x}}<br>{name}: %{{y:.3f}} s<extra></extra>"} for name, values in columns]
    return {"data": data, "layout": layout("trial (id)", "evaluation time (s)", barmode="stack")}


def sensitivity_figure(table: pd.DataFrame, baseline: float | None, *, element: bool = False) -> Figure:
    """One accuracy-vs-ratio curve per group of a sensitivity scan (per weight tensor with ``element``), and the
    unpruned accuracy."""
    data = []
    for group, rows in table.groupby("group", sort=False):
        rows = rows.sort_values("ratio")
        data.append({"type": "scatter", "mode": "lines+markers", "name": str(group), "x": rows["ratio"].tolist(),
                     "y": rows["accuracy"].tolist(),
                     "hovertemplate": f"{group}<br>%{{x:.0%}} removed<br>accuracy %{{y:.2%}}<extra></extra>"})
    if baseline is not None and math.isfinite(baseline) and len(table):
        data.append({"type": "scatter", "mode": "lines", "name": "unpruned", "x": [0, float(table["ratio"].max())],
                     "y": [baseline, baseline], "line": {"color": COLORS["budget"], "dash": "dash"},
                     "hovertemplate": "unpruned: %{y:.2%}<extra></extra>"})
    removed = "weights removed from the tensor (%)" if element else "channels removed from the group (%)"
    return {"data": data, "layout": layout(removed, "validation accuracy (%)",
                                           xaxis=percent_axis(), yaxis=percent_axis())}
