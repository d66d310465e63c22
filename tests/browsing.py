"""Debian's chromium, headless, driven by Selenium through chromium-driver, for the browser tests (report and
dashboard). Import it only after ``pytest.importorskip("selenium.webdriver")``."""

from __future__ import annotations

import os
import shutil

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

BROWSER, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
# per chart: trace name -> points rendered, counted in the page's SVG (scatter markers and bars are `.point`), the
# traces drawn as a line, the legend's entries and each axis's tick labels as drawn
POINTS_JS = """
const out = {};
const texts = (el, selector) => Array.from(el.querySelectorAll(selector), (t) => t.textContent);
for (const el of document.querySelectorAll('.chart')) {
  const traces = {}, lines = [];
  el.querySelectorAll('g.trace').forEach((g) => {
    const name = g.__data__[0].trace.name;  // the trace plotly.js bound to this SVG group
    traces[name] = (traces[name] || 0) + g.querySelectorAll('.point').length;
    if (g.querySelector('path.js-line[d^="M"]')) lines.push(name);
  });
  out[el.getAttribute('data-figure')] = {
    traces: traces, lines: lines, width: el.getBoundingClientRect().width,
    xtitle: (el.querySelector('.xtitle') || {}).textContent || '',
    ytitle: (el.querySelector('.ytitle') || {}).textContent || '',
    legend: texts(el, '.legend .traces .legendtext'),
    xticks: texts(el, '.xtick text'), yticks: texts(el, '.ytick text'),
  };
}
return out;
"""
# per chart: each axis's ticks as plotly.js placed them, [value, label] (its own record of what it drew)
TICKS_JS = """
const out = {};
for (const el of document.querySelectorAll('.chart')) {
  const axis = (name) => (el._fullLayout[name]._vals || []).map((tick) => [tick.x, tick.text]);
  out[el.getAttribute('data-figure')] = {x: axis('xaxis'), y: axis('yaxis')};
}
return out;
"""
# whether the page scrolls sideways (the main layout wider than the window)
OVERFLOW_JS = "return document.documentElement.scrollWidth > document.documentElement.clientWidth"


def chromium() -> webdriver.Chrome:
    """A headless chromium at 1280x800; skips the test (fails it under ``CI``) when chromium is missing."""
    if BROWSER is None or DRIVER is None:
        missing = ("headless browser tests need Debian's chromium and chromium-driver: "
                   "apt-get install chromium chromium-driver (.ci/run installs them)")
        if os.environ.get("CI"):
            pytest.fail(missing)  # CI installs them: missing there is a broken set-up, not a reason to skip
        pytest.skip(missing)
    options = webdriver.ChromeOptions()
    options.binary_location = BROWSER
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,800"):
        options.add_argument(argument)
    return webdriver.Chrome(options=options, service=Service(executable_path=DRIVER))


def assert_charts_read_true(drawn: dict) -> None:
    """Every chart of ``drawn`` (:data:`POINTS_JS`'s result) labels each tick once and has no legend entry without
    something drawn for it (points, bars or a line)."""
    for key, chart in drawn.items():
        for axis in ("xticks", "yticks"):
            labels = [label for label in chart[axis] if label]
            assert len(labels) == len(set(labels)), f"{key}'s {axis[0]} axis repeats tick labels: {labels}"
        for name in chart["legend"]:
            assert chart["traces"].get(name, 0) > 0 or name in chart["lines"], (
                f"{key}'s legend lists {name!r} but nothing is drawn for it: {chart['traces']}, lines {chart['lines']}")
