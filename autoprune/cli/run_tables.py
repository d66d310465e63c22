"""How the CLI shows one run of a server: a short table of its record (``runs show``, ``submit --wait``) and the
baseline vs pruned figures once it has finished. Every value is printed as text, never read as markup."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.table import Table
from rich.text import Text

from autoprune.cli.render import budget_text


def run_table(run: Mapping[str, Any]) -> Table:
    """The record of ``GET /runs/{id}`` as a two-column table: what it searches, where it stands, what it found."""
    config = run.get("config") if isinstance(run.get("config"), Mapping) else {}
    progress = run.get("progress") if isinstance(run.get("progress"), Mapping) else {}
    summary = run.get("summary") if isinstance(run.get("summary"), Mapping) else None
    rows: list[tuple[str, str]] = [
        ("status", str(run.get("status", "?"))),
        ("model on dataset", f"{config.get('model', '?')} on {config.get('dataset', '?')}"),
        ("searcher", str(run.get("searcher", config.get("searcher", "?")))),
        ("budget", budget_text(run["budget"]) if run.get("budget") else "?"),
        ("trials", f"{progress.get('completed', '?')} of {progress.get('total', '?')} finished"),
    ]
    facts = summary.get("rescore_facts") if summary is not None else None
    if facts:  # the re-score exported another trial than the best by search score: both, told apart
        rows += [(str(label), str(text)) for label, text in facts]
    else:
        rows.append(("best by search score" if summary is not None else "best accuracy so far",
                     _percent(progress.get("best_accuracy"))))
        if summary is not None:
            rows.append(("exported", f"trial {summary.get('best_trial_id')}: search score "
                                     f"{_percent(summary.get('search_accuracy'))}"))
    rows += [(label, str(run[key])) for label, key in (("owner", "owner"), ("created", "created"))
             if run.get(key) is not None]
    if run.get("message"):
        rows.append(("message", str(run["message"])))
    if run.get("damaged"):
        rows.append(("damaged", str(run["damaged"])))
    table = Table(title=Text(f"run {run.get('id', '?')}"), show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for label, value in rows:
        table.add_row(Text(label), Text(value))
    return table


def result_table(summary: Mapping[str, Any]) -> Table:
    """Baseline vs pruned on the test set from a finished run's ``summary.json``."""
    table = Table(title="baseline vs pruned (test set)")
    for column in ("", "accuracy", "MFLOPs", "params", "latency (ms)"):
        table.add_column(column, justify="right")
    for name in ("baseline", "pruned"):
        figures = summary.get(name) if isinstance(summary.get(name), Mapping) else {}
        latency = figures.get("latency_ms")
        table.add_row(name, _number(figures.get("accuracy"), ".4f"), _number(_scaled(figures.get("flops")), ".3f"),
                      _number(figures.get("params"), ","), "-" if latency is None else _number(latency, ".3f"))
    return table


def _percent(value: Any) -> str:
    return "-" if not isinstance(value, (int, float)) else f"{value:.2%}"


def _scaled(flops: Any) -> float | None:
    return flops / 1e6 if isinstance(flops, (int, float)) else None


def _number(value: Any, spec: str) -> str:
    return "-" if not isinstance(value, (int, float)) else format(value, spec)
