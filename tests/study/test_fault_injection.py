"""A search killed (SIGKILL) at many moments, between and inside file writes, resumes without losing or repeating
a trial and ends with the table an uninterrupted run writes."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
import torch

pytestmark = pytest.mark.slow  # about 50 processes started and killed: minutes

KILLS = 50
TRIALS = 6
# Runs the search in a fresh process; with KILL_AT=k it SIGKILLs itself at its k-th os.replace or os.fsync,
# i.e. inside or between any two writes to the run directory.
SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import torch
    kill_at = int(sys.argv[3])
    if kill_at:
        calls = {"n": 0}
        def counting(real):
            def wrapper(*args, **kwargs):
                calls["n"] += 1
                if calls["n"] == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)
                return real(*args, **kwargs)
            return wrapper
        os.replace, os.fsync = counting(os.replace), counting(os.fsync)
    import autoprune as ap
    from autoprune.builtins.data import load_digits
    from autoprune.builtins.models import small_cnn
    torch.set_num_threads(1)
    digits = load_digits(batch_size=32, seed=0)
    model = small_cnn(in_channels=1)
    model.load_state_dict(torch.load(sys.argv[1], weights_only=True))
    ap.search(model.eval(), digits.example_inputs(), budget=ap.Budget.flops(0.6), train_data=digits.train,
              val_data=digits.val, trials=int(sys.argv[4]), evaluator={"bn_batches": 1, "finetune_steps": 2,
              "val_batches": 1}, searcher="random", run={"dir": sys.argv[2], "resume": True},
              final={"measure_latency": False, "steps": 2, "rescore": 0})
""")


def _run(script, checkpoint, run_dir, kill_at: int) -> int:
    done = subprocess.run([sys.executable, str(script), str(checkpoint), str(run_dir), str(kill_at), str(TRIALS)],
                          capture_output=True, text=True, timeout=300, check=False)
    if done.returncode not in (0, -9):
        pytest.fail(f"the search failed (exit {done.returncode}) after a kill:\n{done.stderr[-3000:]}")
    return done.returncode


def test_fifty_kills_lose_and_repeat_no_trial(trained_cnn, tmp_path) -> None:
    script, checkpoint = tmp_path / "search.py", tmp_path / "model.pt"
    script.write_text(SCRIPT)
    torch.save(trained_cnn.state_dict(), checkpoint)
    assert _run(script, checkpoint, tmp_path / "straight", 0) == 0
    rng, killed, run = random.Random(0), 0, tmp_path / "killed"
    while killed < KILLS:
        killed += _run(script, checkpoint, run, rng.randint(1, 14)) == -9
    assert _run(script, checkpoint, run, 0) == 0
    straight, resumed = pd.read_csv(tmp_path / "straight" / "trials.csv"), pd.read_csv(run / "trials.csv")
    assert list(resumed["trial_id"]) == list(range(TRIALS))
    columns = ["trial_id", "status", "accuracy", "flops", *(c for c in straight.columns if c.startswith("ratio:"))]
    pd.testing.assert_frame_equal(resumed[columns], straight[columns])
    assert len((run / "trials.jsonl").read_text().splitlines()) == TRIALS
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_trial_id"] == json.loads((tmp_path / "straight" / "summary.json").read_text())["best_trial_id"]
