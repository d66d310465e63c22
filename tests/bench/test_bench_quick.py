"""The benchmark suite's quick mode runs end to end and renders a page from what it wrote."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from autoprune.final.latency_check import MAX_REPAIRS

pytestmark = pytest.mark.slow  # the whole quick benchmark suite: minutes

BENCH = Path(__file__).parents[2] / "bench"
ROW_KEYS = {"model", "method", "budget", "seed", "test_accuracy", "baseline_test_accuracy", "flops_ratio",
            "evaluations", "search_seconds", "resumed_trials", "params_ratio", "latency_ms",
            "best_val_accuracy_by_evaluation", "evaluation_seconds", "full_scores", "full_equivalents",
            "rescore_seconds"}


def test_quick_suite_writes_every_result_and_the_page(tmp_path) -> None:
    subprocess.run([sys.executable, str(BENCH / "run.py"), "--quick", "--out", str(tmp_path)], check=True)

    rows = [json.loads(p.read_text()) for p in sorted((tmp_path / "search_quality").glob("*.json"))]
    assert {(r["row"]["method"], r["row"]["budget"]) for r in rows} == {
        (m, b) for m in ("uniform", "global", "random", "sensitivity", "optuna", "amc") for b in (0.3, 0.5)
    }
    for record in rows:
        assert {"machine", "config", "row"} <= set(record) and "torch" in record["machine"]["versions"]
        row = record["row"]
        assert set(row) >= ROW_KEYS
        assert row["flops_ratio"] <= row["budget"] + 1e-9 and 0 < row["test_accuracy"] <= 1
        assert len(row["best_val_accuracy_by_evaluation"]) == row["evaluations"]

    cost = json.loads((tmp_path / "candidate_cost.json").read_text())
    phases = cost["median_seconds"]
    assert all(phases[p] > 0 for p in ("copy", "prune", "recalibrate", "finetune", "validate", "pure_compute"))
    assert cost["overhead_ratio"] > 0 and cost["candidates_per_minute"] > 0

    latency = json.loads((tmp_path / "latency_speedup.json").read_text())
    assert len(latency["table_error"][0]["rows"]) == 6
    assert {(r["runtime"], r["batch"]) for r in latency["speedups"]} == {
        (rt, b) for rt in ("eager", "onnxruntime") for b in (1, 64)
    }
    searches = json.loads((tmp_path / "latency_search.json").read_text())["rows"]
    assert [r["runtime"] for r in searches] == ["eager", "onnxruntime"]
    # whether real timings of a 0.5 ms model meet the budget is noise on a shared machine: the quick suite
    # checks that each runtime's final measured check ran and judged what it measured; tests/latency/ asserts
    # "met" under a deterministic clock, and the full benchmark reports it
    for row in searches:
        check, fraction = row["latency_check"], row["fraction"]
        assert check["measured_ms"] > 0 and 0 <= check["repairs"] <= MAX_REPAIRS
        assert check["met"] == (check["measured_ratio"] <= fraction)
        assert row["table_build_seconds"] > 0 and row["met_within_5pct"] == (row["latency_ratio"] <= 1.05 * fraction)

    page = (tmp_path / "benchmarks.md").read_text()
    for heading in ("## Baselines", "## Search quality", "**Goal**", "## Where a candidate's time goes",
                    "## FLOPs vs measured latency", "## Latency-budgeted search per runtime",
                    "## The service under polling load"):
        assert heading in page
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", page)
    assert len(images) == 3 and all((tmp_path / image).stat().st_size > 10_000 for image in images)


def test_service_load_quick_measures_both_ways_and_renders_its_section(tmp_path) -> None:
    result = tmp_path / "service_load.json"
    subprocess.run([sys.executable, str(BENCH / "service_load.py"), "--quick", "--results", str(result)], check=True)
    load = json.loads(result.read_text())
    assert [r["mode"] for r in load["runs"]] == ["quiet", "loaded"] and load["search"]["trials"] == 4
    assert all(r["trials_per_s"] > 0 for r in load["runs"]) and load["throughput_ratio"] > 0
    requests = load["requests"]
    assert requests["served"] > 0 and requests["errors"] == 0 and 0 < requests["p50_ms"] <= requests["p99_ms"]
    assert set(requests["by_endpoint"]) == {"GET /runs/{id}", "GET /runs"}
    subprocess.run([sys.executable, str(BENCH / "report.py"), "--quick", "--results", str(tmp_path)], check=True)
    page = (tmp_path / "benchmarks.md").read_text()
    assert "## The service under polling load" in page and f"**{load['throughput_ratio']:.2f}x**" in page
