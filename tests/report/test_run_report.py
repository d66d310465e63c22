"""report.html: drawn from a run directory's files, every chart with its data, safe with untrusted values."""

from __future__ import annotations

import json
import re
import shutil
import time
from html import escape

import pandas as pd
import pytest
from factories import FixedSplit

import autoprune as ap
from autoprune.cli.main import main
from autoprune.report.charts import percent_format
from autoprune.report.run_record import RunRecord, render_report, write_report
from autoprune.report.sensitivity_plot import draw_sensitivity
from search_spaces.ground.errors import ConfigError, RunDirError
from search_spaces.groups import kept_channels

CHARTS = ("kept", "pareto", "progress", "wall-time", "time", "sensitivity")


def figures(html: str) -> dict:
    block = re.search(r'<script type="application/json" id="report-figures">(.*?)</script>', html, flags=re.S)
    return json.loads(block.group(1))


def points(figure: dict, name: str) -> int:
    return sum(len(t["x"]) for t in figure["data"] if t["name"] == name)


def test_every_search_writes_a_report_with_every_chart(finished_run) -> None:
    html = (finished_run / "report.html").read_text()
    trials = pd.read_csv(finished_run / "trials.csv")
    summary = json.loads((finished_run / "summary.json").read_text())
    scan = pd.read_csv(finished_run / "sensitivity.csv")
    charts = figures(html)
    assert set(charts) == set(CHARTS)
    for figure in charts.values():  # every chart has axis titles, with units
        assert re.search(r"\(.+\)", figure["layout"]["xaxis"]["title"]["text"])
        assert re.search(r"\(.+\)", figure["layout"]["yaxis"]["title"]["text"])
    policy = json.loads((finished_run / "best_policy.json").read_text())
    groups = policy["fingerprint"]["groups"]
    kept = {t["name"]: t for t in charts["kept"]["data"]}
    assert kept["unpruned"]["x"] == list(groups) and kept["unpruned"]["y"] == list(groups.values())
    round_to = policy["fingerprint"]["round_to"]  # the small CNN is wide enough for the default rounding of 8
    assert round_to == 8
    expected = [kept_channels(c, policy["ratios"][n], round_to) for n, c in groups.items()]
    assert kept["kept (best policy)"]["y"] == expected
    pareto = charts["pareto"]
    scored = sum(points(pareto, n) for n in ("within budget", "over budget", "stopped early (lower fidelity)"))
    assert scored == (trials["status"] == "ok").sum() == len(trials) == 10
    exported = next(t for t in pareto["data"] if t["name"].startswith("exported"))
    assert exported["customdata"][0][0] == summary["best_trial_id"]
    budget = next(t for t in pareto["data"] if t["name"] == "budget (FLOPs limit)")
    base = summary["baseline"]["flops"]
    assert budget["x"][0] * 1e6 == pytest.approx(0.5 * base, rel=1e-6)  # MFLOPs
    assert points(pareto, "Pareto front") >= 1
    for key in ("progress", "wall-time"):
        line = next(t for t in charts[key]["data"] if t["name"] == "best so far")
        assert len(line["x"]) == 10 and max(v for v in line["y"] if v is not None) == pytest.approx(
            trials[trials["feasible"]]["accuracy"].max(), rel=1e-11)  # trials.csv: 12 significant digits
    assert {t["name"] for t in charts["time"]["data"]} == {"prune + count", "BN recalibration", "finetune",
                                                          "validation", "other"}
    assert all(len(t["x"]) == 10 for t in charts["time"]["data"])
    curves = [t for t in charts["sensitivity"]["data"] if t["name"] != "unpruned"]
    assert [t["name"] for t in curves] == list(groups) and sum(len(t["x"]) for t in curves) == len(scan)
    # the baseline vs pruned table and the latency check come from summary.json
    assert f"{summary['pruned']['flops']:,}" in html and f"{summary['baseline']['params']:,}" in html
    assert f"{summary['pruned']['latency_ms']:.3f}" in html and "speedup, measured side by side" in html
    # offline: nothing is loaded from elsewhere
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", html)


def test_untrusted_values_are_escaped(finished_run, tmp_path) -> None:
    run = tmp_path / "run"
    shutil.copytree(finished_run, run, symlinks=True)
    evil = "</script><script>alert(1)</script><b>x"
    config = json.loads((run / "config.json").read_text())
    config["searcher"], config["note"] = evil, evil
    (run / "config.json").write_text(json.dumps(config))
    scan = pd.read_csv(run / "sensitivity.csv")
    scan.loc[0, "group"] = evil
    scan.to_csv(run / "sensitivity.csv", index=False)
    html = write_report(run).read_text()
    assert evil not in html and "<b>x" not in html and html.count("<script") == 3  # figures, plotly.js, report.js
    assert "&lt;/script&gt;&lt;script&gt;alert(1)" in html  # shown as text in the facts and the config
    assert evil in {t["name"] for t in figures(html)["sensitivity"]["data"]}  # and kept intact as data


def test_a_run_in_progress_shows_what_exists_and_is_not_written_to(finished_run, tmp_path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(finished_run / "config.json", run)
    lines = (finished_run / "trials.jsonl").read_bytes().splitlines(keepends=True)
    log = b"".join(lines[:4]) + lines[4][:40]  # a line being written
    (run / "trials.jsonl").write_bytes(log)
    html = render_report(RunRecord.read(run))
    assert (run / "trials.jsonl").read_bytes() == log
    assert "in progress" in html and "No final model yet" in html and "4 of 10 finished" in html
    charts = figures(html)
    assert len(next(t for t in charts["progress"]["data"] if t["name"] == "best so far")["x"]) == 4
    assert "sensitivity" not in charts


def test_report_of_what_is_not_a_run_directory_names_it(tmp_path, capsys) -> None:
    with pytest.raises(RunDirError, match="'nowhere' is not a directory"):
        write_report("nowhere")
    with pytest.raises(RunDirError, match="is not an autoprune run directory: it has no config.json"):
        write_report(tmp_path)
    assert main(["report", str(tmp_path)]) == 2
    assert "it has no config.json" in capsys.readouterr().err.replace("\n", "")
    (tmp_path / "config.json").write_text(json.dumps({"format_version": 2}))
    with pytest.raises(RunDirError, match="format version 2"):
        write_report(tmp_path)


def test_cli_report_writes_the_page_and_prints_its_path(finished_run, tmp_path, capsys) -> None:
    out = tmp_path / "elsewhere" / "r.html"
    assert main(["report", str(finished_run), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip().endswith(str(out))
    assert set(figures(out.read_text())) == set(CHARTS)


def test_a_200_trial_report_is_fast_and_small(finished_run, tmp_path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(finished_run / "config.json", run)
    entries = [json.loads(line) for line in (finished_run / "trials.jsonl").read_text().splitlines()]
    with open(run / "trials.jsonl", "w") as log:
        for i in range(200):
            entry = json.loads(json.dumps(entries[i % len(entries)]))
            entry["trial"]["trial_id"] = i
            log.write(json.dumps(entry) + "\n")
    started = time.perf_counter()
    path = write_report(run)
    assert time.perf_counter() - started < 2.0
    assert path.stat().st_size < 1_600_000  # plotly.js basic (1.2 MB) + data
    assert sum(len(t["x"]) for t in figures(path.read_text())["time"]["data"]) == 5 * 200


def test_result_report_without_a_run_directory_needs_a_path(trained_cnn, digits, tmp_path) -> None:
    result = ap.search(
        trained_cnn,
        digits.example_inputs(),
        budget=ap.Budget.flops(0.5),
        train_data=digits.train,
        val_data=digits.val,
        searcher="uniform",
        trials=1,
        evaluator={"bn_batches": 1, "finetune_steps": 1, "val_batches": 1},
        final={"measure_latency": False},
    )
    with pytest.raises(ConfigError, match="wrote no run directory"):
        result.report()
    html = result.report(tmp_path / "r.html").read_text()
    charts = figures(html)
    assert points(charts["pareto"], "within budget") == 1 and "sensitivity" not in charts
    assert "(none)" in html  # no run directory


def test_the_kept_chart_rounds_each_group_as_it_is_pruned(tmp_path) -> None:
    """A group feeding a grouped convolution keeps whole parts: the chart shows the count the model really has."""
    import torch
    from torch import nn

    model = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU(),
                          nn.Conv2d(12, 12, 3, padding=1, groups=4), nn.BatchNorm2d(12), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 10)).eval()
    batches = [(torch.randn(8, 3, 8, 8), torch.randint(0, 10, (8,))) for _ in range(2)]
    run = tmp_path / "run"
    result = ap.search(
        model,
        torch.zeros(1, 3, 8, 8),
        budget=ap.Budget.flops(0.7),
        train_data=batches,
        val_data=batches,
        searcher="uniform",
        trials=1,
        evaluator={"bn_batches": 1, "finetune_steps": 0, "val_batches": 1},
        final={"measure_latency": False},
        run={"dir": run},
    )
    grouped = [g for g in result.space if g.round_to > 1]
    assert grouped  # the first convolution's group keeps multiples of 4 channels
    chart = figures((run / "report.html").read_text())["kept"]["data"][1]
    kept = dict(zip(chart["x"], chart["y"], strict=True))
    for group in result.space:
        assert kept[group.name] == group.kept_channels(result.best_policy[group.name])
    pruned = dict(result.pruned_model.named_modules())
    assert kept[grouped[0].name] == pruned[grouped[0].name].out_channels


def test_a_vision_transformer_run_prunes_and_charts_whole_heads(tmp_path) -> None:
    """Attention modules are groups of heads through the whole run: searched, pruned, exported, drawn in heads."""
    import torch
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(img_size=16, patch_size=4, in_chans=1, num_classes=10, embed_dim=32, depth=2,
                              num_heads=4, mlp_ratio=2.0).eval()
    batches = [(torch.randn(8, 1, 16, 16), torch.randint(0, 10, (8,))) for _ in range(2)]
    run = tmp_path / "run"
    result = ap.search(model, torch.zeros(1, 1, 16, 16), budget=ap.Budget.flops(0.6), train_data=batches,
                       val_data=batches, searcher="random", trials=3, seed=0,
                       evaluator={"bn_batches": 1, "finetune_steps": 1, "val_batches": 1},
                       final={"measure_latency": False}, run={"dir": run})
    heads = [g.name for g in result.space if g.unit == "head"]
    assert heads == ["blocks.0.attn", "blocks.1.attn"]
    chart = figures((run / "report.html").read_text())["kept"]
    kept = dict(zip(chart["data"][1]["x"], chart["data"][1]["y"], strict=True))
    for name in heads:
        assert kept[f"{name} [heads]"] == result.pruned_model.get_submodule(name).num_heads
    assert "heads" in chart["layout"]["yaxis"]["title"]["text"]
    assert result.pruned_model(torch.zeros(2, 1, 16, 16)).shape == (2, 10)


def test_groups_the_trace_time_check_excluded_are_listed_with_why(finished_run, tmp_path) -> None:
    import torch

    batches = [(torch.randn(8, 3, 8, 8), torch.randint(0, 5, (8,))) for _ in range(2)]
    run = tmp_path / "run"
    result = ap.search(
        FixedSplit().eval(),
        torch.zeros(1, 3, 8, 8),
        budget=ap.Budget.flops(0.9),
        train_data=batches,
        val_data=batches,
        searcher="uniform",
        trials=1,
        evaluator={"bn_batches": 1, "finetune_steps": 0, "val_batches": 1},
        final={"measure_latency": False},
        run={"dir": run},
    )
    assert json.loads((run / "config.json").read_text())["excluded"] == result.space.excluded
    html = (run / "report.html").read_text()
    assert 'id="section-excluded"' in html
    ((name, reason),) = result.space.excluded.items()  # body's channels are split in fixed sizes
    assert name == "body" and f'<th scope="row">body</th><td>{escape(reason)}</td>' in html
    assert 'id="section-excluded"' not in (finished_run / "report.html").read_text()  # nothing excluded there
    config = json.loads((run / "config.json").read_text())
    del config["excluded"]  # a run written before config.json had them: its summary.json has them
    (run / "config.json").write_text(json.dumps(config))
    assert '<th scope="row">body</th>' in render_report(RunRecord.read(run))


@pytest.mark.parametrize("dtick", [m * 10.0 ** e for e in range(-6, 0) for m in (1, 2, 5)])
def test_percent_tick_labels_carry_the_decimals_their_spacing_needs(dtick: float) -> None:
    """At every spacing plotly.js picks (1, 2 or 5 times a power of ten), neighbouring ticks get different labels
    and each label reads as its own value (d3's ".N%" formats as Python's)."""
    spec = percent_format(dtick)
    ticks = [0.9 + i * dtick for i in range(6)]
    labels = [format(t, spec) for t in ticks]
    assert len(set(labels)) == len(labels), labels
    for tick, label in zip(ticks, labels, strict=True):
        assert float(label[:-1]) / 100 == pytest.approx(tick, abs=dtick / 100)


def test_an_element_run_is_drawn_in_weights_against_its_non_zeros(trained_cnn, digits, tmp_path) -> None:
    run = tmp_path / "run"
    ap.search(trained_cnn, digits.example_inputs(), budget=ap.Budget.nonzeros(0.5), train_data=digits.train,
              val_data=digits.val, searcher="sensitivity", searcher_options={"levels": [1.0]}, trials=7,
              space={"granularity": "element"},
              evaluator={"bn_batches": 1, "finetune_steps": 1, "val_batches": 1},
              final={"steps": 1, "measure_latency": False}, run={"dir": run})
    html = (run / "report.html").read_text()
    charts = figures(html)
    kept = charts["kept"]["layout"]
    assert kept["xaxis"]["title"]["text"] == "weight tensor (network order)"
    assert kept["yaxis"]["title"]["text"] == "kept weights (non-zero count)" and "channel" not in json.dumps(kept)
    assert "weights" in charts["kept"]["data"][1]["hovertemplate"]
    pareto = charts["pareto"]
    assert "non-zero weights kept" in pareto["layout"]["xaxis"]["title"]["text"] and "Accuracy vs non-zero" in html
    trials = pd.read_csv(run / "trials.csv")
    shown = sorted(x for t in pareto["data"] if t["name"] in ("within budget", "over budget") for x in t["x"])
    assert shown == pytest.approx(sorted(trials["nonzeros_ratio"])) and len(set(shown)) > 1  # not one FLOPs value
    budget = next(t for t in pareto["data"] if t["name"] == "budget (non-zeros limit)")
    assert budget["x"] == [0.5, 0.5]
    assert charts["sensitivity"]["layout"]["xaxis"]["title"]["text"] == "weights removed from the tensor (%)"


def test_the_sensitivity_png_labels_its_ticks_in_percent_without_repeats() -> None:
    import matplotlib.pyplot as plt

    table = pd.DataFrame({"group": ["a"] * 3 + ["b"] * 3, "ratio": [0.25, 0.5, 0.75] * 2,
                          "accuracy": [0.9953, 0.9907, 0.9861, 0.9950, 0.9880, 0.9815]})
    figure = draw_sensitivity(table, baseline=0.9960)
    figure.canvas.draw()
    axis = figure.axes[0]
    for shown, (low, high) in ((axis.xaxis, axis.get_xlim()), (axis.yaxis, axis.get_ylim())):
        labels = [t.get_text() for t in shown.get_ticklabels() if low <= t.get_position()[shown is axis.yaxis] <= high]
        assert len(labels) >= 3 and all(label.endswith("%") for label in labels), labels
        assert len(set(labels)) == len(labels), labels
    plt.close(figure)
