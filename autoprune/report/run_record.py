"""``report.html``: one self-contained page per run, drawn from the run directory's files.

It reads only (``config.json``, the trial log, ``summary.json``, ``best_policy.json``, ``sensitivity.csv``), so
it works on any finished run and on a run still in progress, showing what exists so far.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from autoprune.evaluation.chance_watch import ChanceWatch
from autoprune.evaluation.evaluator import EvaluatorConfig
from autoprune.final.summary import SLOWER_ADVICE, ModelFigures, Summary
from autoprune.prune.export import SPARSE_FILE, STATE_FILE
from autoprune.report.charts import (
    CostAxis,
    accuracy_flops_figure,
    best_so_far_figures,
    kept_channels_figure,
    sensitivity_figure,
    time_figure,
)
from autoprune.report.page import Section, Table, render_page
from autoprune.report.sensitivity_plot import PLOT, plot_sensitivity
from autoprune.study import rundir as rd
from autoprune.study.trials import RATIO_PREFIX, best_row, pareto_front, trials_table
from search_spaces.budget import Budget, FlopsBudget, NonzerosBudget
from search_spaces.ground.errors import AutopruneError, RunDirError
from search_spaces.ground.io import MAX_CHECKPOINT_BYTES, atomic_write_text, check_size
from search_spaces.groups import kept_channels
from search_spaces.policy import Policy

SENSITIVITY_COLUMNS = ("group", "ratio", "accuracy")


@dataclass(frozen=True)
class RunRecord:
    """What a report is drawn from: a run directory's files, or a finished search held in memory.

    Attributes:
        config: what ``config.json`` records (budget, evaluator, the space's fingerprint, ...).
        trials: the trials table (:func:`autoprune.study.trials.trials_table`).
        summary: the final step's baseline vs pruned figures (None while running or without a feasible trial).
        policy: the exported policy (``best_policy.json``).
        sensitivity: the sensitivity scan (``sensitivity.csv``), when the run made one.
        path: the run directory (None for a search that wrote none).
    """

    config: Mapping[str, Any]
    trials: pd.DataFrame
    summary: Summary | None = None
    policy: Policy | None = None
    sensitivity: pd.DataFrame | None = None
    path: Path | None = None

    @classmethod
    def read(cls, path: str | Path) -> RunRecord:
        """Read a run directory without writing to it (a search may be running there)."""
        path = Path(path)
        if not path.is_dir():
            raise RunDirError(f"{str(path)!r} is not a directory; give the run directory of a search "
                              f"(it holds {rd.CONFIG} and {rd.TRIAL_LOG})")
        if not (path / rd.CONFIG).is_file():
            raise RunDirError(f"{str(path)!r} is not an autoprune run directory: it has no {rd.CONFIG} (a search "
                              "writes it when it starts)")
        run = rd.RunDir(path)
        config = run.read_config()
        version = config.get("format_version")
        if version != rd.FORMAT_VERSION:
            raise RunDirError(f"{str(path)!r} holds run directory format version {version!r}; this autoprune "
                              f"reports on version {rd.FORMAT_VERSION} only")
        summary = policy = sensitivity = None
        if (path / rd.SUMMARY).is_file():
            summary = Summary.from_dict(rd.read_json(path / rd.SUMMARY, rd.MAX_CONFIG_BYTES),
                                        source=repr(str(path / rd.SUMMARY)))
        if (path / rd.BEST_POLICY).is_file():
            policy = Policy.load(path / rd.BEST_POLICY)
        if (path / rd.SENSITIVITY_TABLE).is_file():
            sensitivity = _read_sensitivity(path / rd.SENSITIVITY_TABLE)
        trials = trials_table(run.read_rows(), list(group_channels(config)))
        return cls(config, trials, summary, policy, sensitivity, path)

    @property
    def fidelity(self) -> int:
        """Finetune steps of a full-fidelity evaluation."""
        evaluator = self.config.get("evaluator")
        steps = evaluator.get("finetune_steps") if isinstance(evaluator, Mapping) else None
        if isinstance(steps, int):
            return steps
        return int(self.trials["fidelity"].max()) if len(self.trials) else 0

    @property
    def budget(self) -> Budget | None:
        """The budget searched for (None when the config does not record one)."""
        if self.summary is not None:
            return self.summary.budget
        data = self.config.get("budget")
        return Budget.from_dict(data) if isinstance(data, Mapping) else None


def write_report(run_dir: str | Path, path: str | Path | None = None) -> Path:
    """Write the report of the run in ``run_dir`` to ``path`` (default ``run_dir/report.html``, with
    ``sensitivity.png`` beside it when the run made a sensitivity scan); returns the path."""
    record = RunRecord.read(run_dir)
    if path is None and record.sensitivity is not None:
        plot_sensitivity(record.sensitivity, Path(run_dir) / PLOT, baseline=_unpruned_accuracy(record.trials))
    return save_report(record, Path(run_dir) / rd.REPORT if path is None else path)


def save_report(record: RunRecord, path: str | Path) -> Path:
    """Write ``record``'s report to ``path``, atomically."""
    return atomic_write_text(Path(path), render_report(record))


def render_report(record: RunRecord) -> str:
    """The report page of ``record`` as HTML text."""
    return render_page(_title(record), _facts(record), report_sections(record))


def group_channels(config: Mapping[str, Any]) -> dict[str, int]:
    """Group name → unpruned channels, in network order, from the space's fingerprint in ``config``."""
    groups = config.get("fingerprint", {}).get("groups") if isinstance(config.get("fingerprint"), Mapping) else None
    if not isinstance(groups, Mapping) or not all(isinstance(c, int) for c in groups.values()):
        raise RunDirError(f"{rd.CONFIG} has no usable fingerprint.groups (group name → channels), got {groups!r}")
    return {str(name): int(channels) for name, channels in groups.items()}


def _read_sensitivity(path: Path) -> pd.DataFrame:
    check_size(path, what="sensitivity table", limit=MAX_CHECKPOINT_BYTES)
    expected = f"a CSV table with the columns {', '.join(SENSITIVITY_COLUMNS)}"
    try:
        table = pd.read_csv(path, encoding="utf-8")
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        why = "it is empty" if isinstance(exc, pd.errors.EmptyDataError) else f"it does not parse ({exc})"
        raise RunDirError(f"{str(path)!r} is not a sensitivity table: {why}; expected {expected}") from None
    missing = [c for c in SENSITIVITY_COLUMNS if c not in table.columns]
    if missing:
        raise RunDirError(f"{str(path)!r} is not a sensitivity table: it lacks the columns {missing}")
    for column in ("ratio", "accuracy"):
        values = pd.to_numeric(table[column], errors="coerce").astype(float)  # text becomes NaN: not finite
        bad = table[column][~values.map(math.isfinite)]
        if len(bad):
            raise RunDirError(f"{str(path)!r} has a {column} that is not a finite number: {bad.iloc[0]!r}")
        table[column] = values
    table["group"] = table["group"].astype(str)
    return table


# -- the page's parts ----------------------------------------------------------------------------------
def _title(record: RunRecord) -> str:
    fingerprint = record.config.get("fingerprint")
    architecture = fingerprint.get("architecture") if isinstance(fingerprint, Mapping) else None
    cli = record.config.get("config")
    if isinstance(cli, Mapping) and cli.get("model"):
        architecture = f"{cli.get('model')} on {cli.get('dataset')}"
    return f"autoprune report: {architecture or 'search'}"


def _facts(record: RunRecord) -> list[tuple[str, str]]:
    trials, total = record.trials, record.config.get("trials")
    failed = int((trials["status"] != "ok").sum())
    finished = record.summary is not None and record.summary.trials == len(trials)
    facts = [
        ("status", "finished" if finished else "in progress (or stopped): showing what exists"),
        ("run directory", str(record.path) if record.path is not None else "(none)"),
        ("searcher", str(record.config.get("searcher", "?"))),
        ("budget", record.budget.describe() if record.budget is not None else "?"),
        ("trials", f"{len(trials)} of {total} finished, {failed} failed"),
        ("generated", time.strftime("%Y-%m-%d %H:%M:%S")),
    ]
    if record.summary is not None and record.summary.finished:
        facts.insert(1, ("final step", record.summary.finished))
    if record.summary is not None:  # the re-score chose another trial than the search's best: both, told apart
        facts[-1:-1] = record.summary.rescore_facts()
    return facts


def report_sections(record: RunRecord) -> list[Section]:
    """The report's sections (charts, tables, the config), in page order; the service's dashboard draws them too."""
    evaluations, wall = best_so_far_figures(record.trials, fidelity=record.fidelity)
    sections = [
        *_near_chance(record),
        _comparison(record),
        *_speed(record),
        _kept(record),
        *_excluded(record),
        _accuracy_vs_flops(record),
        Section("progress", "Best so far vs evaluations", "best feasible full-fidelity validation accuracy",
                figure=evaluations),
        Section("wall-time", "Best so far vs wall time", figure=wall),
        Section("time", "Where each candidate's time went", "evaluation time per trial, by phase",
                figure=time_figure(record.trials)),
    ]
    if record.sensitivity is not None:
        sections.append(Section("sensitivity", "Sensitivity: each group pruned alone",
                                figure=sensitivity_figure(record.sensitivity, _unpruned_accuracy(record.trials),
                                                          element=_is_element(record))))
    sections.append(_latency(record))
    sections.append(Section("config", "Config", f"{rd.CONFIG} of this run",
                            text=json.dumps(record.config, indent=2, default=str)))
    return sections


def _comparison(record: RunRecord) -> Section:
    title = "Baseline vs pruned (test set)"
    s = record.summary
    if s is None:
        return Section("comparison", title, "No final model yet: the search is running, stopped early, or found no "
                       "feasible policy.")
    base_size, pruned_size = _file_sizes(record)
    rows = [
        ("accuracy", f"{s.baseline.accuracy:.2%}", f"{s.pruned.accuracy:.2%}",
         f"{(s.pruned.accuracy - s.baseline.accuracy) * 100:+.2f} points"),
        ("loss", f"{s.baseline.loss:.4f}", f"{s.pruned.loss:.4f}", _ratio(s.pruned.loss, s.baseline.loss)),
        ("FLOPs", f"{s.baseline.flops:,}", f"{s.pruned.flops:,}", f"{s.flops_ratio:.1%}"),
        ("parameters", f"{s.baseline.params:,}", f"{s.pruned.params:,}", f"{s.params_ratio:.1%}"),
        (f"latency, {s.latency_setting.runtime if s.latency_setting else 'eager'} (ms)",
         *_latencies(s.baseline, s.pruned)),
        ("file size (state dict)", _size(base_size), _size(pruned_size),
         _ratio(pruned_size, base_size) if base_size and pruned_size else "–"),
    ]
    if s.nonzeros_ratio is not None and s.pruned.nonzeros != s.pruned.params:  # element-wise sparsity
        rows.insert(4, ("non-zero parameters", f"{s.baseline.nonzeros:,}", f"{s.pruned.nonzeros:,}",
                        f"{s.nonzeros_ratio:.1%}"))
        sparse = _bytes(record.path / rd.MODEL_DIR / SPARSE_FILE) if record.path is not None else None
        rows.append(("file size (sparse form)", _size(base_size), _size(sparse),
                     _ratio(sparse, base_size) if base_size and sparse else "–"))
    note = (f"exported trial {s.best_trial_id} (search accuracy {s.search_accuracy:.2%}), finetuned "
            f"{s.final_finetune_steps} steps; {s.trials} trials, {s.failed_trials} failed")
    if (story := s.rescore_story()) is not None:
        note += f". Re-scoring chose it: {story}"
    return Section("comparison", title, note, table=Table(("", "baseline", "pruned", "pruned / baseline"),
                                                          tuple(rows)))


def _speed(record: RunRecord) -> list[Section]:
    """The pruned model against the unpruned one in each runtime it was timed in (none: no section)."""
    s = record.summary
    if s is None or not s.speed:
        return []
    rows = tuple((c.runtime, f"{c.baseline_ms:.3f}", f"{c.pruned_ms:.3f}", f"{c.speedup:.2f}x",
                  "SLOWER" if c.slower else "faster") for c in s.speed)
    note = ("timed side by side with the unpruned model (median of alternating rounds) in the budget's runtime, in "
            "eager PyTorch and in the runtime of each export form")
    if s.slower_in:
        note = f"SLOWER than the unpruned model in {', '.join(s.slower_in)}. Fix: {SLOWER_ADVICE}. ({note})"
    return [Section("speed", "Speed per runtime", note,
                    table=Table(("runtime", "unpruned (ms)", "pruned (ms)", "speedup", ""), rows))]


def _latencies(baseline: ModelFigures, pruned: ModelFigures) -> tuple[str, str, str]:
    if baseline.latency_ms is None or pruned.latency_ms is None:
        return "not measured", "not measured", "–"
    return f"{baseline.latency_ms:.3f}", f"{pruned.latency_ms:.3f}", _ratio(pruned.latency_ms, baseline.latency_ms)


def _file_sizes(record: RunRecord) -> tuple[int | None, int | None]:
    """Bytes of the baseline checkpoint (when the run names one) and of the pruned model's state dict."""
    cli = record.config.get("config")
    checkpoint = record.config.get("checkpoint") or (cli.get("checkpoint") if isinstance(cli, Mapping) else None)
    pruned = record.path / rd.MODEL_DIR / STATE_FILE if record.path is not None else None
    return _bytes(Path(checkpoint) if isinstance(checkpoint, str) else None), _bytes(pruned)


def _bytes(path: Path | None) -> int | None:
    return path.stat().st_size if path is not None and path.is_file() else None


def _kept(record: RunRecord) -> Section:
    element = _is_element(record)
    title = "Kept weights per tensor" if element else "Kept channels per group"
    channels = group_channels(record.config)
    round_to = record.config["fingerprint"].get("round_to", 1)
    space = record.config.get("space") if isinstance(record.config.get("space"), Mapping) else {}
    per_group = space.get("group_round_to") or {}  # grouped layers keep whole parts: a coarser rounding
    units = {n: per_group.get(n, round_to) for n in channels}
    if not all(isinstance(u, int) and not isinstance(u, bool) and u >= 1 for u in units.values()):
        raise RunDirError(f"{rd.CONFIG} has fingerprint.round_to {round_to!r} and space.group_round_to "
                          f"{per_group!r}; expected positive integers")
    if record.policy is not None:
        ratios, note = dict(record.policy.ratios), "the exported policy against the unpruned widths"
    else:
        best = best_row(record.trials, record.fidelity)
        if best is None:
            return Section("kept", title, "No feasible full-fidelity trial yet.")
        ratios = {n: float(best[RATIO_PREFIX + n]) for n in channels}
        note = f"the best trial so far ({int(best['trial_id'])}) against the unpruned widths"
    kept = [kept_channels(c, ratios.get(n, 0.0), units[n]) for n, c in channels.items()]
    heads = space.get("head_groups") or []
    figure = kept_channels_figure(list(channels), list(channels.values()), kept, element=element,
                                  heads={n for n in heads if isinstance(n, str)})
    return Section("kept", title, note, figure=figure)


def _near_chance(record: RunRecord) -> list[Section]:
    """The search's warning when its first scores were all near chance (none: no section)."""
    chance, trials = record.config.get("chance_accuracy"), record.trials
    if not isinstance(chance, (int, float)) or not chance > 0 or not {"status", "accuracy"} <= set(trials.columns):
        return []
    try:  # judged on any machine: the device the search ran on does not matter here
        evaluator = EvaluatorConfig.from_dict({**(record.config.get("evaluator") or {}), "device": "cpu"})
    except AutopruneError:  # not an evaluator of ours: nothing to judge it by
        return []
    scheduler = record.config.get("scheduler")
    watch = ChanceWatch(float(chance), evaluator,
                        screened=isinstance(scheduler, Mapping) and scheduler.get("kind") == "cascade")
    if watch.column not in trials.columns:
        return []
    finished = trials.sort_values("finished_at", kind="stable") if "finished_at" in trials else trials
    watch.resume(finished.loc[finished["status"] == "ok", watch.column])  # the first to finish, as the search saw
    warning = watch.verdict()
    return [] if warning is None else [Section("near-chance", "Warning: scores near chance", warning)]


def _excluded(record: RunRecord) -> list[Section]:
    """The groups the trace-time check left out of the search, with why (none: no section). ``config.json`` has them
    from the start; runs written before it did have them in ``summary.json`` once finished."""
    excluded = record.config.get("excluded") or (record.summary.excluded if record.summary is not None else None)
    if not excluded or not isinstance(excluded, Mapping):
        return []
    rows = tuple((str(name), str(reason)) for name, reason in excluded.items())
    groups = f"{len(rows)} channel group{'s' if len(rows) != 1 else ''}"
    return [Section("excluded", "Groups left unpruned", f"the trace-time check found {groups} unsafe to prune and "
                    "kept them whole; the search pruned the others", table=Table(("group", "why"), rows))]


def _accuracy_vs_flops(record: RunRecord) -> Section:
    """Accuracy against FLOPs; for element pruning (which never changes FLOPs) against the non-zero weights kept."""
    trials, budget = record.trials, record.budget
    best = record.summary.best_trial_id if record.summary is not None else None
    if best is None and (row := best_row(trials, record.fidelity)) is not None:
        best = int(row["trial_id"])
    element = _is_element(record)
    cost = CostAxis.nonzeros() if element else CostAxis.flops(trials)
    limit, note = _cost_limit(record, element), "every scored trial; hover a point for its trial"
    if budget is not None and not isinstance(budget, NonzerosBudget if element else FlopsBudget):
        drawn = "non-zeros" if element else "FLOPs"
        note += f"; the budget ({budget.describe()}) does not limit {drawn}: trials over it are marked"
    front = pareto_front(trials, record.fidelity, cost=cost.column)
    figure = accuracy_flops_figure(trials, fidelity=record.fidelity, best_id=best, flops_limit=limit, cost=cost,
                                   pareto_ids=front["trial_id"].astype(int).tolist())
    title = "Accuracy vs non-zero weights" if element else "Accuracy vs FLOPs"
    return Section("pareto", title, note, figure=figure)


def _is_element(record: RunRecord) -> bool:
    """Whether the run pruned single weights (element granularity) rather than channels."""
    fingerprint = record.config.get("fingerprint")
    return isinstance(fingerprint, Mapping) and fingerprint.get("granularity") == "element"


def _cost_limit(record: RunRecord, element: bool) -> float | None:
    """The budget's limit on the chart's cost axis: FLOPs, or for element pruning the share of non-zeros kept
    (None when the budget limits something else)."""
    budget = record.budget
    if element and isinstance(budget, NonzerosBudget):
        if budget.fraction is not None:
            return budget.fraction
        base = record.summary.baseline.nonzeros if record.summary is not None else None
        return budget.absolute / base if base else None
    if not element and isinstance(budget, FlopsBudget):
        return budget.absolute if budget.absolute is not None else _flops_limit(record.trials, budget.fraction)
    return None


def _flops_limit(trials: pd.DataFrame, fraction: float | None) -> float | None:
    """The FLOPs limit of a fraction budget, in the trials' own terms (unpruned FLOPs = flops / flops_ratio)."""
    ok = trials[(trials["status"] == "ok") & (trials["flops_ratio"] > 0)]
    if fraction is None or ok.empty:
        return None
    return fraction * float(ok["flops"].iloc[0] / ok["flops_ratio"].iloc[0])


def _unpruned_accuracy(trials: pd.DataFrame) -> float | None:
    """The accuracy of a trial that pruned nothing (a sensitivity scan's first probe), if there is one."""
    ratios = trials[[c for c in trials.columns if c.startswith(RATIO_PREFIX)]]
    unpruned = trials[(ratios == 0).all(axis=1) & (trials["status"] == "ok")]
    return float(unpruned["accuracy"].iloc[0]) if len(unpruned) else None


def _latency(record: RunRecord) -> Section:
    title = "Latency check"
    s = record.summary
    if s is None or (s.latency_check is None and s.pruned.latency_ms is None):
        return Section("latency", title, "No latency was measured for this run.")
    rows = []
    check = s.latency_check
    if check is not None:
        rows += [("predicted by the lookup table (ms)", f"{check.predicted_ms:.3f}"),
                 ("limit in the table's terms (ms)", f"{check.limit_predicted_ms:.3f}"),
                 ("measured (ms)", f"{check.measured_ms:.3f}"),
                 ("repairs (pruned further after a miss)", str(check.repairs)),
                 ("budget met", "yes" if check.met else "NO")]
        if check.measured_ratio is not None:
            rows.append(("measured pruned / unpruned (median of rounds)", f"{check.measured_ratio:.3f}"))
    if s.latency_speedup is not None:
        rows.append(("speedup, measured side by side", f"{s.latency_speedup:.2f}x"))
    if s.latency_setting is not None:
        where = s.latency_setting
        rows.append(("measured at", f"batch {where.batch}, {where.threads} thread(s), {where.device}, "
                                    f"{where.runtime}"))
    note = ("the latency budget's final measured check" if check is not None
            else "not a latency budget: both models timed side by side for the summary")
    return Section("latency", title, note, table=Table(("", "value"), tuple(rows)))


def _ratio(value: float | None, base: float | None) -> str:
    return f"{value / base:.1%}" if value is not None and base else "–"


def _size(size: int | None) -> str:
    return "–" if size is None else f"{size / 1024:,.1f} KiB"
