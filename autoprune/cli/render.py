"""Rich console output of the CLI's results: tables and summaries.

Values (paths, names, run ids, messages) are printed as :class:`rich.text.Text`, never read as markup: a run
directory named ``x[/x]`` or a module named ``evil[/x]`` prints as it is."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd
from rich.table import Table
from rich.text import Text

from autoprune.cli.console import out, print_line
from autoprune.composition.search import SearchResult
from autoprune.final.apply import ExportedModel, Recovery
from autoprune.final.summary import SLOWER_ADVICE, Summary
from autoprune.study.rundir import BEST_POLICY, REPORT
from search_spaces.budget import Budget


def report_search(result: SearchResult) -> None:
    """The best policy, baseline vs pruned, the ratios kept and where the run directory is."""
    element = result.space.granularity == "element"
    out.print(_policy_table(result, element))
    s = result.summary
    out.print(_comparison_table(s))
    if (story := s.rescore_story()) is not None:  # the search's best is not what was exported: say why
        print_line(story, to=out)
    out.print(_kept_line(s, element))
    for name, reason in s.excluded.items():
        out.print(Text.assemble((f"excluded group {name}", "yellow"), f": {reason}"), highlight=False)
    if s.latency_check is not None:
        out.print(latency_verdict(s), highlight=False, soft_wrap=True)
    if len(s.speed) > 1 or s.slower_in:
        out.print(_speed_table(s))
    if s.slower_in:
        out.print(f"[bold red]slower than the unpruned model in {', '.join(s.slower_in)}[/bold red]: fix with "
                  f"{SLOWER_ADVICE}", highlight=False, soft_wrap=True)
    if result.run_dir is not None:  # last: where to look next
        if (apply := _apply_hint(result)) is not None:
            print_line(apply, to=out)
        print_line(f"run directory: {result.run_dir}", to=out)
        print_line(f"report: {result.run_dir / REPORT}", to=out)


def _apply_hint(result: SearchResult) -> str | None:
    """The baseline checkpoint the search pruned, as ``autoprune apply --checkpoint`` takes it (None when the run
    does not record one)."""
    checkpoint = result.config.get("checkpoint") if isinstance(result.config, Mapping) else None
    if not isinstance(checkpoint, str) or not checkpoint:
        return None
    cli = result.config.get("config")
    which = "".join(f" --{key} {cli[key]}" for key in ("model", "dataset")
                    if isinstance(cli, Mapping) and isinstance(cli.get(key), str))
    return (f"baseline checkpoint: {checkpoint} (prune it again with: autoprune apply "
            f"{result.run_dir / BEST_POLICY} --checkpoint {checkpoint}{which} --out pruned/)")


def _policy_table(result: SearchResult, element: bool) -> Table:
    title = "sparsity per weight tensor" if element else "fraction of channels removed per group"
    policy = Table(title=f"best policy ({title})")
    for column, justify in (("layer" if element else "group", "left"), ("weights" if element else "channels", "right"),
                            ("ratio", "right"), ("kept", "right")):
        policy.add_column(column, justify=justify)
    for group in result.space:
        ratio = result.best_policy[group.name]
        unit = " heads" if group.unit == "head" else ""
        policy.add_row(Text(group.name), f"{group.channels}{unit}", f"{ratio:.3f}",
                       f"{group.kept_channels(ratio)}{unit}")
    return policy


def _speed_table(s: Summary) -> Table:
    """Each runtime the model was timed in: unpruned and pruned milliseconds and their ratio, side by side."""
    where = s.latency_setting
    table = Table(title=f"speed per runtime (batch {where.batch}, {where.threads} thread(s), {where.device})")
    for col in ("runtime", "baseline (ms)", "pruned (ms)", "speedup"):
        table.add_column(col, justify="right")
    for check in s.speed:
        style = "red" if check.slower else ""
        table.add_row(check.runtime, f"{check.baseline_ms:.3f}", f"{check.pruned_ms:.3f}", f"{check.speedup:.2f}x",
                      style=style)
    return table


def _comparison_table(s: Summary) -> Table:
    table = Table(title="baseline vs pruned (test set)")
    runtime = s.latency_setting.runtime if s.latency_setting is not None else "eager"
    for col in ("", "accuracy", "MFLOPs", "params", f"latency, {runtime} (ms)"):
        table.add_column(col, justify="right")
    for name, row in (("baseline", s.baseline), ("pruned", s.pruned)):
        latency = "-" if row.latency_ms is None else f"{row.latency_ms:.3f}"
        table.add_row(name, f"{row.accuracy:.4f}", f"{row.flops / 1e6:.3f}", f"{row.params:,}", latency)
    return table


def _kept_line(s: Summary, element: bool) -> str:
    line = f"FLOPs kept: {s.flops_ratio:.1%}  params kept: {s.params_ratio:.1%}"
    if element and s.nonzeros_ratio is not None:
        line += f"  non-zeros kept: {s.nonzeros_ratio:.1%} (dense kernels still multiply the zeros: no faster)"
    if s.latency_speedup is not None and s.latency_setting is not None:
        where = s.latency_setting
        line += (f"  latency speedup: {s.latency_speedup:.2f}x ({where.runtime}, {where.threads} thread(s), "
                 f"batch {where.batch})")
    return line


def latency_verdict(summary: Summary) -> str:
    """Whether the exported model met a latency budget, as measured at the end."""
    check, budget = summary.latency_check, summary.budget
    if check.measured_ratio is not None and budget.fraction is not None:
        detail = f"measured {check.measured_ratio:.1%} of the unpruned model's latency, budget {budget.fraction:.0%}"
    else:
        detail = f"measured {check.measured_ms:.3f} ms, budget {budget.absolute:.3f} ms"
    repairs = f"; pruned further {check.repairs} time(s) to get there" if check.repairs else ""
    return f"latency budget {'met' if check.met else 'NOT met'}: {detail}{repairs}"


def budget_text(budget: Any) -> str:
    """A budget as a reader would say it ("flops <= 50% of the unpruned model"), not as a mapping."""
    return str(Budget.from_dict(budget)) if isinstance(budget, dict) else str(budget)


def report_sensitivity(table: pd.DataFrame, groups: Iterable[str], baseline_accuracy: float) -> None:
    """Each group's validation accuracy at each ratio it was pruned alone to."""
    pivot = table.pivot(index="group", columns="ratio", values="accuracy")
    shown = Table(title=f"validation accuracy with one group pruned (unpruned: {baseline_accuracy:.4f})")
    shown.add_column("group")
    shown.add_column("ratios -> accuracy")
    for group in groups:
        row = pivot.loc[group].dropna()
        shown.add_row(Text(str(group)), "  ".join(f"{r:.2f}:{a:.3f}" for r, a in row.items()))
    out.print(shown)


def report_recovery(recovery: Recovery) -> None:
    """Both models' test accuracy after the pruned one was recalibrated and finetuned."""
    out.print(f"test accuracy: baseline {recovery.baseline_accuracy:.4f} -> pruned {recovery.accuracy:.4f} "
              f"(BatchNorm recalibrated, {recovery.steps} finetune steps)")


def report_export(exported: ExportedModel) -> None:
    """Each file written with its check, then the FLOPs and parameters before and after."""
    for name, info in exported.written.items():
        check = "" if "max_abs_diff" not in info else f" (outputs match eager, max |diff| {info['max_abs_diff']:.1e})"
        if "sizes" in info:
            check = (f" (reloads bit for bit; gzip {info['sizes']['sparse_gzip_bytes']:,} B vs dense "
                     f"{info['sizes']['dense_gzip_bytes']:,} B)")
        print_line(f"{name}: {info['path']}{check}", to=out)
    base_flops, flops = exported.baseline_flops, exported.flops
    out.print(f"FLOPs {base_flops:,} -> {flops:,} ({flops / base_flops:.1%}); "
              f"params {exported.baseline_params:,} -> {exported.params:,}")


def report_sparsity(checkpoint: str, report: pd.DataFrame) -> None:
    """Per-tensor sparsity of a checkpoint, with totals."""
    table = Table(title=Text(f"sparsity of {checkpoint}"))
    for col in ("tensor", "shape", "numel", "non-zeros", "density", "sparsity", "share"):
        table.add_column(col, justify="left" if col == "tensor" else "right")
    for row in report.itertuples(index=False):
        table.add_row(Text(str(row.tensor)), row.shape, f"{row.numel:,}", f"{row.nonzeros:,}", f"{row.density:.1%}",
                      f"{row.sparsity:.1%}", f"{row.share:.1%}")
    out.print(table)


def report_sizes(sizes: Mapping[str, int]) -> None:
    """The measured size of the dense and sparse forms, raw and gzip-compressed."""
    out.print(f"on disk: dense {sizes['dense_bytes']:,} B (gzip {sizes['dense_gzip_bytes']:,} B); sparse form "
              f"{sizes['sparse_bytes']:,} B (gzip {sizes['sparse_gzip_bytes']:,} B)", highlight=False)


def report_runs(server: str, runs: Iterable[Mapping[str, Any]]) -> None:
    """A table of the runs on a server."""
    table = Table(title=Text(f"runs on {server}"))
    for column in ("id", "status", "progress", "best acc", "budget", "searcher", "created", "owner"):
        table.add_column(column)
    for run in runs:
        done, best = run["progress"], run["progress"]["best_accuracy"]
        cells = (run["id"], run.get("status"), f"{done['completed']}/{done['total']}",
                 "-" if best is None else f"{best:.4f}", budget_text(run["budget"]), run["searcher"], run["created"],
                 run["owner"])
        table.add_row(*(Text("-" if cell is None else str(cell)) for cell in cells))  # values, never markup
    out.print(table)
