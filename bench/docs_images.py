"""Regenerate docs/img/report.png and docs/img/dashboard.png from a real, healthy run.

A local ``autoprune serve`` runs the demo search (small CNN on digits, random search, FLOPs at most 50%, 24
trials; the baseline comes from the training cache or is trained first); headless Debian chromium then photographs
the run's report.html and its dashboard page at 1280 px wide. The images are written only when the run is healthy:
a baseline above 90% accuracy, the exported model within 3 points of it, and the pruned model faster than the
unpruned one; otherwise the script says what is wrong and leaves docs/img as it is.

    python bench/docs_images.py            # about 3 minutes with a cached baseline
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import sys
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.support.ui import WebDriverWait

import autoprune as ap
from autoprune.service.local import LocalServer

ROOT = Path(__file__).parent.parent
WIDTH = 1280


def healthy(summary: dict) -> list[str]:
    """What makes the run a misleading picture (empty: healthy)."""
    base, pruned = summary["baseline"], summary["pruned"]
    problems = []
    if base["accuracy"] < 0.9:
        problems.append(f"baseline accuracy {base['accuracy']:.2%} < 90%")
    if abs(pruned["accuracy"] - base["accuracy"]) > 0.03:
        problems.append(f"pruned accuracy {pruned['accuracy']:.2%} is not within 3 points of {base['accuracy']:.2%}")
    speedup = summary.get("latency_speedup")
    if speedup is None or speedup <= 1:
        problems.append(f"the pruned model is not faster (speed-up {speedup})")
    if summary.get("slower_in"):
        problems.append(f"slower than the unpruned model in {summary['slower_in']}")
    return problems


def browser() -> webdriver.Chrome:
    """Headless Debian chromium (apt-get install chromium chromium-driver)."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        sys.exit("needs Debian's chromium and chromium-driver: apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--window-size={WIDTH},800", "--hide-scrollbars"):
        options.add_argument(argument)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))


def photograph(page: webdriver.Chrome, path: Path, ready: str) -> None:
    """The whole page, ``WIDTH`` px wide, once the JavaScript expression ``ready`` holds (its charts drawn)."""
    WebDriverWait(page, 120).until(lambda p: p.execute_script(f"return {ready}"))
    height = page.execute_script("return document.documentElement.scrollHeight")
    page.set_window_size(WIDTH, height)
    time.sleep(2)  # the charts redraw at the new window size
    page.save_screenshot(str(path))
    print(f"wrote {path} ({WIDTH}x{height})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=24, help="trials of the demo search (default 24)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img", help="where the PNGs go (docs/img)")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "docs-images",
                        help="the server's runs root and log (default runs/docs-images; emptied first)")
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    token = secrets.token_urlsafe(24)
    config = {"model": "small_cnn", "dataset": "digits", "budget": {"flops": 0.5}, "searcher": "random",
              "trials": args.trials, "evaluator": {"bn_batches": 5, "finetune_steps": 20},
              "final_finetune_steps": 300}
    with LocalServer(args.work / "runs", token=token) as server, ap.Client(server.url, token=token) as client:
        run = client.submit(config)
        print(f"run {run.id}: {args.trials} trials on {server.url}", flush=True)
        if run.wait(progress=True) != "done":
            sys.exit(f"the run ended {run.status()}; see {server.log_path}")
        summary = run.info()["summary"]
        problems = healthy(summary)
        if problems:
            sys.exit("not a healthy run, docs/img left as it is: " + "; ".join(problems))
        page = browser()
        try:
            page.get((args.work / "runs" / run.id / "run" / "report.html").resolve().as_uri())
            photograph(page, args.out / "report.png", "document.body.dataset.ready")
            page.set_window_size(WIDTH, 800)
            page.get(f"{server.url}/")
            page.execute_script("sessionStorage.setItem('autoprune-token', arguments[0])", token)
            page.get(f"{server.url}/#/runs/{run.id}")
            photograph(page, args.out / "dashboard.png", "(document.body.dataset.charts || '').startsWith('done')")
        finally:
            page.quit()


if __name__ == "__main__":
    main()
