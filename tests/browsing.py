"""Debian's chromium, headless, driven by Selenium through chromium-driver, for the browser tests (report and
dashboard). Import it only after ``pytest.importorskip("selenium.webdriver")``."""

from __future__ import annotations

import os
import shutil

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

BROWSER, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
# per chart: trace name -> points rendered, counted in the page's SVG (scatter markers and bars are `.point`), and
# the traces drawn as a line
POINTS_JS = """
const out = {};
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
  };
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
