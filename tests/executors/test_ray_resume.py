"""Stopping the driver of a Ray search (SIGINT, SIGKILL) and resuming it from the run directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

# starts Ray drivers, kills them and resumes: minutes; one xdist worker runs every Ray module (see the Makefile)
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]

# 150 finetune steps: a trial of about a second, so the search is still running when the test, polling every
# 0.2 s, has seen two rows (at 3 steps the five trials took 0.25 s in all and could end before the kill)
ARGS = ["--executor", "ray", "--max-concurrent", "1", "--bn-batches", "1", "--finetune-steps", "150",
        "--final-finetune-steps", "0"]


def _interruptible() -> None:
    """SIGINT at its default in the driver, as in a terminal: a test run started in the background (``cmd &``)
    hands its children SIGINT as ignored, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _cli(*argv: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "autoprune.cli", *argv], start_new_session=True,
                            preexec_fn=_interruptible, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _rows(run: Path) -> int:
    path = run / "trials.csv"
    return len(pd.read_csv(path)) if path.exists() else 0


def _wait_for_rows(run: Path, n: int, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while _rows(run) < n:
        if process.poll() is not None:
            pytest.fail(f"search ended early ({process.returncode}): {process.stderr.read()[-2000:]}")
        if time.time() > deadline:
            process.kill()
            pytest.fail(f"fewer than {n} trials after {timeout}s")
        time.sleep(0.2)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_stopped_driver_resumes_to_exactly_the_requested_trials(sig, tmp_path) -> None:
    run = tmp_path / "run"
    first = _cli("search", "--trials", "5", "--run-dir", str(run), *ARGS)
    _wait_for_rows(run, 2, first)
    if sig == signal.SIGINT:
        os.kill(first.pid, signal.SIGINT)  # Ctrl+C on the driver
    else:
        os.killpg(first.pid, signal.SIGKILL)  # the driver and everything it started, without warning
    first.wait(timeout=120)
    if sig == signal.SIGINT:
        assert first.returncode == 130, first.stderr.read()[-2000:]
    done_before = _rows(run)
    assert 2 <= done_before < 5 and not (run / "summary.json").exists()
    second = _cli("search", "--resume", str(run), "--executor", "ray")
    assert second.wait(timeout=600) == 0, second.stderr.read()[-3000:]
    trials = pd.read_csv(run / "trials.csv")
    assert len(trials) == 5 and trials["trial_id"].is_unique
    assert (run / "summary.json").exists() and (run / "best_policy.json").exists()
