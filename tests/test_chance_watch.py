from __future__ import annotations

import copy

import pytest
from torch import nn

import autoprune as ap
from autoprune.chance_watch import CHECK_AFTER, ChanceWatch
from autoprune.evaluate import EvaluatorConfig, Score


def _score(accuracy: float, *, rung: int = 0, status: str = "ok") -> Score:
    return Score(accuracy, 1.0, 1, 1, True, 0, 0.1, rung=rung, status=status)


def test_warns_once_when_the_first_candidates_all_score_near_chance() -> None:
    watch = ChanceWatch(0.1, EvaluatorConfig(finetune_steps=0))
    warnings = [watch.observe(_score(0.9, rung=1)), watch.observe(_score(float("nan"), status="failed"))]
    warnings += [watch.observe(_score(0.1 + 0.009 * i)) for i in range(CHECK_AFTER + 5)]
    assert warnings[:CHECK_AFTER + 1] == [None] * (CHECK_AFTER + 1)  # neither a later rung nor a failure counts
    assert "at most 18.1% (chance: 10.0%)" in warnings[CHECK_AFTER + 1]
    assert "finetune_steps=30" in warnings[CHECK_AFTER + 1]
    assert warnings[CHECK_AFTER + 2:] == [None] * 5


def test_one_candidate_well_above_chance_means_no_warning() -> None:
    watch = ChanceWatch(0.1, EvaluatorConfig(finetune_steps=10))
    assert [watch.observe(_score(0.35 if i == 3 else 0.1)) for i in range(CHECK_AFTER)] == [None] * CHECK_AFTER


@pytest.mark.parametrize("blind", [True, False])
def test_a_search_whose_candidates_are_at_chance_says_so(trained_cnn, digits, blind) -> None:
    model = copy.deepcopy(trained_cnn)
    if blind:  # every logit 0: the model always guesses class 0, whatever the pruning
        head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
        nn.init.zeros_(head.weight), nn.init.zeros_(head.bias)
    events: list[ap.Progress] = []
    ap.search(model, digits.example_inputs(), budget=ap.Budget.flops(0.7), train_data=digits.train,
              val_data=digits.val, searcher="random", trials=CHECK_AFTER, rescore=0, measure_latency=False,
              evaluator={"bn_batches": 2, "finetune_steps": 0, "val_batches": 2}, progress=events.append)
    warnings = [e.message for e in events if e.stage == "warning"]
    if blind:
        assert len(warnings) == 1 and "cannot rank candidates" in warnings[0] and "(chance: 10.0%)" in warnings[0]
    else:
        assert warnings == []
