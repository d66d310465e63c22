"""A time budget on the Ray executor: once it is used up no trial starts, the running one finishes, and the best
so far goes through the final step (the local executor's behaviour, tests/composition/test_search.py)."""

from __future__ import annotations

import json
import time

import pytest

import autoprune as ap

pytestmark = pytest.mark.xdist_group("ray")  # one xdist worker runs every Ray module (see the Makefile)
BUDGET = 60.0  # seconds: more than Ray takes to start on a loaded machine, so trial 0 is asked within it


class _SlowFirstAsk(ap.Searcher):
    """Trial 0 prunes a little, asked just before the time budget runs out and returned after it has; later trials
    prune much more."""

    name = "slow_first_ask"

    def __init__(self) -> None:
        super().__init__()
        self.created = time.monotonic()  # just before search() starts its clock

    def _ask(self, trial_id: int) -> ap.Policy:
        if trial_id == 0:
            time.sleep(max(0.0, BUDGET + 1 - (time.monotonic() - self.created)))
        return self.context.space.policy([0.1 if trial_id == 0 else 0.6 * g.max_ratio for g in self.context.space])


@pytest.mark.slow  # starts a local Ray
def test_the_time_budget_stops_ray_trials_and_finalizes(trained_cnn, digits, tmp_path) -> None:
    run, events = tmp_path / "run", []
    result = ap.search(
        trained_cnn,
        digits.example_inputs(),
        budget=ap.Budget.params(0.99),
        train_data=digits.train,
        val_data=digits.val,
        searcher=_SlowFirstAsk(),
        trials=4,
        evaluator={"bn_batches": 1, "finetune_steps": 2, "val_batches": 1},
        executor="ray",
        run={"time_budget": BUDGET, "dir": run, "progress": events.append},
        final={"steps": 1, "rescore": 0, "measure_latency": False},
    )
    assert list(result.trials["trial_id"]) == [0] and result.summary.trials == 1
    assert (run / "best_policy.json").exists() and json.loads((run / "config.json").read_text())["trials"] == 4
    assert any(e.stage == "stopped" and "time budget of 60 s used up after 1 of 4 trials" in e.message for e in events)
