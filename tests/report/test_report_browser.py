"""report.html in a real browser: Debian's chromium, headless, driven by Selenium through chromium-driver.

.ci/run installs both; without them (or without selenium) these tests skip and say what to install (the
``browser`` fixture: tests/conftest.py).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed: pip install -e '.[dev]'")
from browsing import OVERFLOW_JS, POINTS_JS  # noqa: E402
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
