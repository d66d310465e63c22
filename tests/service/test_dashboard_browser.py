"""The service's dashboard (``autoprune serve`` at ``/``) in a real browser: headless Debian chromium driven by
Selenium (the ``browser`` fixture, tests/conftest.py), against a real server in a subprocess.

Searches are submitted through the page's form with uploaded (untrained) weights, so no baseline is trained.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch

from autoprune.builtins.models import small_cnn
from autoprune.final.summary import Summary
from autoprune.service.local import LocalServer

pytestmark = [pytest.mark.browser, pytest.mark.slow]
pytest.importorskip("selenium.webdriver", reason="selenium is not installed: pip install -e '.[dev]'")
from browsing import OVERFLOW_JS, POINTS_JS, assert_charts_read_true  # noqa: E402
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402
from served import TINY, TOKEN, serve  # noqa: E402

WAIT = 600  # seconds a tiny search may take on a busy 2-core machine (a driver process imports torch first)
# what the form leaves to its JSON box: the fast settings of the service tests
FAST = {key: TINY[key] for key in ("evaluator", "final_finetune_steps", "rescore")}
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHARTS = {"kept", "pareto", "progress", "wall-time", "time"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    started = serve(tmp_path_factory.mktemp("dashboard") / "runs", "--max-concurrent", "1")
    yield started
    started.stop()


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "small_cnn.pt"
    torch.save(small_cnn(in_channels=1).state_dict(), path)
    return path


def _visible(browser, element_id: str) -> bool:
    return browser.find_element(By.ID, element_id).is_displayed()


def _open(browser, server: LocalServer, fragment: str = "/", width: int = 1280) -> None:
    """The dashboard at ``#fragment``, signed in (the token is asked for once per tab)."""
    browser.get("about:blank")  # a real page load: a fragment change alone keeps charts drawn at the old width
    browser.set_window_size(width, 800)
    browser.get(f"{server.url}/#{fragment}")
    WebDriverWait(browser, 30).until(lambda b: any(_visible(b, f"view-{v}") for v in ("login", "runs", "run")))
    if _visible(browser, "view-login"):
        browser.find_element(By.ID, "token").send_keys(TOKEN)
        browser.find_element(By.CSS_SELECTOR, "#login-form button").click()
        WebDriverWait(browser, 30).until(lambda b: not _visible(b, "view-login"))


def _submit(browser, server: LocalServer, *, trials: int, checkpoint: Path | str, extra: dict) -> str:
    """Fill the form and submit; returns the new run's id (the page moves to its run page)."""
    _open(browser, server, "/new")
    form = browser.find_element(By.ID, "submit-form")
    WebDriverWait(browser, 30).until(lambda _: Select(form.find_element(By.NAME, "model")).options)
    Select(form.find_element(By.NAME, "model")).select_by_value("small_cnn")
    Select(form.find_element(By.NAME, "dataset")).select_by_value("digits")
    form.find_element(By.NAME, "checkpoint").clear()  # the form keeps what the last submit entered
    if isinstance(checkpoint, Path):
        browser.find_element(By.ID, "checkpoint-file").send_keys(str(checkpoint))
        WebDriverWait(browser, 60).until(lambda _: form.find_element(By.NAME, "checkpoint").get_attribute("value"))
    else:
        form.find_element(By.NAME, "checkpoint").send_keys(checkpoint)
    Select(form.find_element(By.NAME, "budget-kind")).select_by_value("params")
    for name, value in (("budget-value", "0.6"), ("trials", str(trials)), ("extra", json.dumps(extra))):
        form.find_element(By.NAME, name).clear()
        form.find_element(By.NAME, name).send_keys(value)
    Select(form.find_element(By.NAME, "granularity")).select_by_value("channel")
    Select(form.find_element(By.NAME, "searcher")).select_by_value("random")
    Select(form.find_element(By.NAME, "executor")).select_by_value("local")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    WebDriverWait(browser, 60).until(lambda b: "#/runs/" in b.current_url or _visible(b, "error"))
    assert "#/runs/" in browser.current_url, browser.find_element(By.ID, "error").text
    return browser.current_url.rsplit("/", 1)[1]


def _runs_row(browser, run_id: str, status: str) -> str:
    """The text of ``run_id``'s row in the runs table once it shows ``status``. The table is redrawn every 2 s,
    so the row is found and read in one step, again if a redraw replaced it in between."""
    def row_with_status(b) -> str | bool:
        text = b.find_element(By.CSS_SELECTOR, f'tr[data-run="{run_id}"]').text
        return text if status in text else False

    redrawn = (NoSuchElementException, StaleElementReferenceException)
    return WebDriverWait(browser, 30, ignored_exceptions=redrawn).until(row_with_status)


def _status(browser) -> str:
    return browser.find_element(By.ID, "run-status").text


@pytest.fixture(scope="module")
def form_run(browser, server: LocalServer, weights: Path) -> tuple[str, str]:
    """A 3-trial search submitted through the form with uploaded weights: its id and the checkpoint's id."""
    run_id = _submit(browser, server, trials=3, checkpoint=weights, extra=FAST)
    checkpoint = httpx.get(f"{server.url}/runs/{run_id}", headers=AUTH).json()["config"]["checkpoint"]
    return run_id, Path(checkpoint).stem


def _wait_drawn(browser, state: str) -> list[str]:
    """Wait until the run page shows ``state`` (status:completed) with its charts drawn; the statuses seen."""
    seen, deadline = [], time.monotonic() + WAIT
    while browser.find_element(By.TAG_NAME, "body").get_attribute("data-charts") != state:
        status = _status(browser)
        assert time.monotonic() < deadline, f"the page stayed {status}: {browser.find_element(By.ID, 'error').text}"
        if not seen or seen[-1] != status:
            seen.append(status)
        time.sleep(0.3)
    return seen


def test_the_token_is_asked_once_kept_for_the_tab_and_sent_with_every_call(browser, server: LocalServer) -> None:
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
    assert httpx.get(f"{server.url}/choices").status_code == 401  # data needs the token, the page does not
    browser.get(f"{server.url}/")
    browser.execute_script("sessionStorage.clear()")
    browser.refresh()
    WebDriverWait(browser, 30).until(lambda b: _visible(b, "view-login"))
    browser.find_element(By.ID, "token").send_keys("wrong-token-0123456789")
    browser.find_element(By.CSS_SELECTOR, "#login-form button").click()
    WebDriverWait(browser, 30).until(lambda b: _visible(b, "error"))
    assert "refused the token" in browser.find_element(By.ID, "error").text and _visible(browser, "view-login")
    assert browser.execute_script("return sessionStorage.getItem('autoprune-token')") is None

    _open(browser, server)
    assert _visible(browser, "view-runs") and not _visible(browser, "view-login")
    assert browser.execute_script("return sessionStorage.getItem('autoprune-token')") == TOKEN
    browser.refresh()  # the same tab keeps it
    WebDriverWait(browser, 30).until(lambda b: _visible(b, "view-runs"))
    models = Select(browser.find_element(By.NAME, "model"))
    WebDriverWait(browser, 30).until(lambda _: models.options)  # GET /choices with the token
    assert "small_cnn" in [o.get_attribute("value") for o in models.options]
    browser.find_element(By.ID, "sign-out").click()
    assert _visible(browser, "view-login") and browser.execute_script("return sessionStorage.length") == 0


def test_a_refused_config_shows_the_servers_message_as_text(browser, server: LocalServer) -> None:
    before = httpx.get(f"{server.url}/runs", headers=AUTH).json()
    _open(browser, server, "/new")
    form = browser.find_element(By.ID, "submit-form")
    WebDriverWait(browser, 30).until(lambda _: Select(form.find_element(By.NAME, "model")).options)
    evil = "<img src=x onerror=window.pwned=1>"
    form.find_element(By.NAME, "extra").send_keys(json.dumps({"model": evil}))
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    WebDriverWait(browser, 30).until(lambda b: _visible(b, "error"))
    error = browser.find_element(By.ID, "error")
    assert f"not submitted: 400 unknown model '{evil}'" in error.text
    assert error.find_elements(By.TAG_NAME, "img") == [] and browser.execute_script("return window.pwned") is None
    assert browser.current_url.endswith("#/new") and httpx.get(f"{server.url}/runs", headers=AUTH).json() == before


def test_a_search_submitted_through_the_form_goes_live_to_done_with_its_charts(browser, server: LocalServer,
                                                                               form_run, tmp_path) -> None:
    run_id, _ = form_run
    _open(browser, server, f"/runs/{run_id}")
    seen = _wait_drawn(browser, "done:3")
    assert "running" in seen, seen  # watched while it ran
    assert browser.find_element(By.ID, "run-count").text == "3 of 3 trials"
    assert not browser.find_element(By.ID, "resume").get_attribute("disabled")
    assert browser.find_element(By.ID, "cancel").get_attribute("disabled")

    drawn = browser.execute_script(POINTS_JS)
    trials = httpx.get(f"{server.url}/runs/{run_id}/trials", headers=AUTH).json()
    config = httpx.get(f"{server.url}/runs/{run_id}/files/config.json", headers=AUTH).json()
    groups = len(config["fingerprint"]["groups"])
    assert set(drawn) == CHARTS
    assert all(chart["xtitle"] and chart["ytitle"] for chart in drawn.values())
    assert_charts_read_true(drawn)  # no tick label twice, no legend entry without its points
    assert drawn["kept"]["traces"] == {"unpruned": groups, "kept (best policy)": groups}
    pareto = drawn["pareto"]["traces"]
    assert pareto.get("within budget", 0) + pareto.get("over budget", 0) == len(trials) == 3
    feasible = sum(t["feasible"] for t in trials)
    for key in ("progress", "wall-time"):
        assert drawn[key]["traces"]["feasible trial"] == feasible and drawn[key]["lines"] == ["best so far"]
    assert set(drawn["time"]["traces"].values()) == {3}
    summary = httpx.get(f"{server.url}/runs/{run_id}", headers=AUTH).json()["summary"]
    table = browser.find_element(By.CSS_SELECTOR, "#section-comparison table").text
    assert f"{summary['pruned']['params']:,}" in table and f"{summary['baseline']['params']:,}" in table

    browser.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(tmp_path)})
    browser.find_element(By.CSS_SELECTOR, 'button[data-file="best_policy.json"]').click()
    deadline = time.monotonic() + 30
    while not (tmp_path / "best_policy.json").is_file():
        assert time.monotonic() < deadline, "the download did not arrive"
        time.sleep(0.2)
    served = httpx.get(f"{server.url}/runs/{run_id}/files/best_policy.json", headers=AUTH).content
    assert (tmp_path / "best_policy.json").read_bytes() == served

    browser.find_element(By.CSS_SELECTOR, "nav a[href='#/']").click()
    row = _runs_row(browser, run_id, "done")
    assert "3 / 3" in row and "small_cnn on digits" in row


def test_the_run_page_tells_the_best_by_search_score_from_the_exported_trial(browser, server: LocalServer,
                                                                               form_run) -> None:
    run_id, _ = form_run
    _open(browser, server, f"/runs/{run_id}")
    _wait_drawn(browser, "done:3")
    summary = httpx.get(f"{server.url}/runs/{run_id}", headers=AUTH).json()["summary"]
    exported = summary["best_trial_id"]
    WebDriverWait(browser, 30).until(lambda b: _visible(b, "run-exported-box"))
    assert browser.find_element(By.ID, "run-exported-label").text == "exported"
    assert browser.find_element(By.ID, "run-exported").text.startswith(f"trial {exported}: search score ")
    # as if re-scoring had exported another trial than the best by search score
    path = server.log_path.parent / "runs" / run_id / "run" / "summary.json"
    original = path.read_text()
    told = Summary.from_dict({**summary, "search_accuracy": 0.9907, "rescored": [
        {"trial_id": 98, "search_accuracy": 0.9953, "accuracy": 0.9861, "loss": 0.1, "fidelity": 30, "seconds": 1.0},
        {"trial_id": exported, "search_accuracy": 0.9907, "accuracy": 0.9884, "loss": 0.1, "fidelity": 30,
         "seconds": 1.0}]})
    try:
        path.write_text(json.dumps(told.to_dict()))
        WebDriverWait(browser, 30).until(lambda b: b.find_element(By.ID, "run-best-label").text
                                         == "best by search score")
        assert browser.find_element(By.ID, "run-best").text == "trial 98: 99.53% (re-scored 98.61%)"
        assert browser.find_element(By.ID, "run-exported-label").text == "exported after re-scoring"
        assert (browser.find_element(By.ID, "run-exported").text
                == f"trial {exported}: search score 99.07%, re-scored 98.84%")
    finally:
        path.write_text(original)


def test_a_running_search_is_cancelled_and_resumed_from_its_page(browser, server: LocalServer, form_run) -> None:
    _, checkpoint = form_run
    slow = {**FAST, "evaluator": {"bn_batches": 1, "finetune_steps": 20, "val_batches": 1}}
    run_id = _submit(browser, server, trials=200, checkpoint=checkpoint, extra=slow)
    deadline = time.monotonic() + WAIT
    while _status(browser) != "running":
        assert time.monotonic() < deadline, f"the run stayed {_status(browser)}"
        time.sleep(0.3)
    cancel, resume = browser.find_element(By.ID, "cancel"), browser.find_element(By.ID, "resume")
    assert resume.get_attribute("disabled")
    cancel.click()
    WebDriverWait(browser, 120).until(lambda b: _status(b) == "cancelled")
    assert cancel.get_attribute("disabled") and not resume.get_attribute("disabled")
    assert httpx.get(f"{server.url}/runs/{run_id}", headers=AUTH).json()["status"] == "cancelled"

    resume.click()  # queued again with its 200 trials, and cancelled again
    WebDriverWait(browser, 30).until(lambda b: _status(b) in ("queued", "running"))
    cancel.click()
    WebDriverWait(browser, 120).until(lambda b: _status(b) == "cancelled")
    browser.find_element(By.CSS_SELECTOR, "nav a[href='#/']").click()
    assert "/ 200" in _runs_row(browser, run_id, "cancelled")


@pytest.mark.parametrize("width", [1280, 420])
def test_the_pages_fit_the_window(browser, server: LocalServer, form_run, width: int) -> None:
    run_id, _ = form_run
    _open(browser, server, f"/runs/{run_id}", width=width)
    _wait_drawn(browser, "done:3")
    inner = browser.execute_script("return document.documentElement.clientWidth")
    assert not browser.execute_script(OVERFLOW_JS), f"the run page scrolls sideways at {width} px"
    columns = 2 if width >= 1200 else 1
    for key, chart in browser.execute_script(POINTS_JS).items():
        assert inner / columns * 0.8 <= chart["width"] <= inner / columns, f"{key} is {chart['width']}px wide"
    _open(browser, server, "/", width=width)
    WebDriverWait(browser, 30).until(lambda b: b.find_elements(By.CSS_SELECTOR, "#runs-table tbody tr"))
    assert not browser.execute_script(OVERFLOW_JS), f"the runs page scrolls sideways at {width} px"
    right = browser.execute_script("return document.getElementById('submit').getBoundingClientRect().right")
    assert right <= inner
