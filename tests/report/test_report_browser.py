"""report.html in a real browser: Debian's chromium, headless, driven by Selenium through chromium-driver.

.ci/run installs both; without them (or without selenium) these tests skip and say what to install (the
``browser`` fixture: tests/conftest.py).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from autoprune.report.charts import CostAxis, accuracy_flops_figure, best_so_far_figures
from autoprune.report.page import Section, render_page
from autoprune.study.trials import trials_table

pytestmark = [pytest.mark.browser, pytest.mark.slow]
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed: pip install -e '.[dev]'")
from browsing import OVERFLOW_JS, POINTS_JS, TICKS_JS, assert_charts_read_true  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHARTS = ("kept", "pareto", "progress", "wall-time", "time", "sensitivity")


def _open(driver: webdriver.Chrome, report: Path, width: int, height: int) -> None:
    driver.set_window_size(width, height)
    driver.get(report.as_uri())
    WebDriverWait(driver, 60).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
    assert driver.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true"


def test_every_chart_draws_its_data_points(browser, finished_run) -> None:
    _open(browser, finished_run / "report.html", 1280, 800)
    drawn = browser.execute_script(POINTS_JS)
    assert set(drawn) == set(CHARTS)
    trials = pd.read_csv(finished_run / "trials.csv")
    scan = pd.read_csv(finished_run / "sensitivity.csv")
    groups = scan["group"].unique().tolist()
    for key, chart in drawn.items():
        assert chart["xtitle"] and chart["ytitle"], f"{key} has no axis titles"
    assert_charts_read_true(drawn)
    assert drawn["kept"]["traces"] == {"unpruned": len(groups), "kept (best policy)": len(groups)}
    pareto = drawn["pareto"]["traces"]
    assert pareto.get("within budget", 0) + pareto.get("over budget", 0) == len(trials) == 10
    assert pareto["Pareto front"] >= 1 and sum(v for k, v in pareto.items() if k.startswith("exported")) == 1
    assert {"Pareto front", "budget (FLOPs limit)"} <= set(drawn["pareto"]["lines"])
    feasible = int(trials["feasible"].sum())
    for key in ("progress", "wall-time"):
        assert drawn[key]["traces"]["feasible trial"] == feasible and drawn[key]["lines"] == ["best so far"]
    assert drawn["time"]["traces"] == {name: 10 for name in ("prune + count", "BN recalibration", "finetune",
                                                             "validation", "other")}
    assert {k: v for k, v in drawn["sensitivity"]["traces"].items() if k != "unpruned"} == {
        g: int((scan["group"] == g).sum()) for g in groups}
    assert "Baseline vs pruned" in browser.page_source and "Latency check" in browser.page_source


def test_hovering_a_trial_shows_which_trial_it_is(browser, finished_run) -> None:
    _open(browser, finished_run / "report.html", 1280, 800)
    chart = browser.find_element(By.ID, "chart-pareto")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", chart)
    point = chart.find_element(By.CSS_SELECTOR, ".scatterlayer .trace .point")
    ActionChains(browser).move_to_element(point).perform()
    WebDriverWait(browser, 10).until(lambda d: chart.find_elements(By.CSS_SELECTOR, ".hoverlayer .hovertext"))
    label = chart.find_element(By.CSS_SELECTOR, ".hoverlayer .hovertext").text
    assert "trial " in label and "accuracy" in label and "MFLOPs" in label


@pytest.mark.parametrize(("width", "height"), [(1280, 800), (390, 800)])
def test_the_page_fits_the_window(browser, finished_run, width, height) -> None:
    _open(browser, finished_run / "report.html", width, height)
    inner = browser.execute_script("return document.documentElement.clientWidth")
    assert not browser.execute_script(OVERFLOW_JS)  # no sideways scrolling
    drawn = browser.execute_script(POINTS_JS)
    columns = 2 if width >= 1200 else 1
    for key, chart in drawn.items():
        assert inner / columns * 0.8 <= chart["width"] <= inner / columns, f"{key} is {chart['width']}px wide"


def _trials(accuracies: list[float]) -> pd.DataFrame:
    """Scored, feasible full-fidelity trials with these accuracies, cheaper the later they come."""
    rows = [{"trial_id": i, "status": "ok", "accuracy": a, "loss": 0.1, "flops": 2e6 - 1e5 * i, "params": 1000 - i,
             "nonzeros_ratio": 0.5 - 0.01 * i, "feasible": True, "fidelity": 2, "seconds": 1.0,
             "finished_at": 1e9 + i} for i, a in enumerate(accuracies)]
    return trials_table(rows, [])


def _page(tmp_path: Path, figures: dict[str, dict]) -> Path:
    page = tmp_path / "charts.html"
    page.write_text(render_page("ticks", [], [Section(key, key, figure=f) for key, f in figures.items()]))
    return page


# the accuracies of issue 34: a whole-percent format labelled their ticks 100%, 99%, 99%, 98% and 29%, 29%, 28%
NEAR_ONE = [0.9953, 0.9907, 0.9861, 0.9815, 0.9800]
NEAR_29 = [0.2950, 0.2921, 0.2893, 0.2862, 0.2805]


def test_percent_ticks_follow_the_range_and_every_label_is_its_value(browser, tmp_path) -> None:
    near_one, near_29 = _trials(NEAR_ONE), _trials(NEAR_29)
    figures = {
        "near-one": accuracy_flops_figure(near_one, fidelity=2, pareto_ids=[0], best_id=0, flops_limit=None),
        "near-29": best_so_far_figures(near_29, fidelity=2)[0],
        "element": accuracy_flops_figure(near_one, fidelity=2, pareto_ids=[0, 4], best_id=0, flops_limit=0.5,
                                         cost=CostAxis.nonzeros()),
    }
    _open(browser, _page(tmp_path, figures), 1280, 800)
    drawn = browser.execute_script(POINTS_JS)
    assert_charts_read_true(drawn)
    for key, axes in browser.execute_script(TICKS_JS).items():
        for axis in ("y",) if key != "element" else ("x", "y"):
            ticks = axes[axis]
            assert len(ticks) >= 3, f"{key}: {ticks}"
            for value, label in ticks:  # "99.5%" at 0.995: no label rounded onto a neighbour's value
                assert label.endswith("%") and float(label[:-1]) / 100 == pytest.approx(value, abs=1e-9), (key, ticks)
    assert any(label.count(".") for _, label in browser.execute_script(TICKS_JS)["near-one"]["y"])
    assert "non-zero weights" in drawn["element"]["xtitle"]


def test_a_one_trial_pareto_front_is_drawn_where_its_legend_says(browser, tmp_path) -> None:
    trials = _trials([0.95, 0.90, 0.85])  # each later trial is cheaper and worse: all three on the front
    trials.loc[trials["trial_id"] == 0, "flops"] = 1e5  # trial 0 cheapest and best: the front is trial 0 alone
    figure = accuracy_flops_figure(trials, fidelity=2, pareto_ids=[0], best_id=0, flops_limit=1.5e6)
    _open(browser, _page(tmp_path, {"pareto": figure}), 1280, 800)
    drawn = browser.execute_script(POINTS_JS)["pareto"]
    assert "Pareto front" in drawn["legend"] and drawn["traces"]["Pareto front"] == 1
    assert_charts_read_true({"pareto": drawn})
    chart = browser.find_element(By.ID, "chart-pareto")
    ring = chart.find_elements(By.CSS_SELECTOR, ".scatterlayer .trace")[-3].find_element(By.CSS_SELECTOR, ".point")
    star = chart.find_elements(By.CSS_SELECTOR, ".scatterlayer .trace")[-2].find_element(By.CSS_SELECTOR, ".point")
    assert ring.size["width"] > star.size["width"]  # the front's ring shows around the exported trial's star
