from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import autoprune as ap
from autoprune.builtins.models import small_cnn
from autoprune.evaluation.chance_watch import CHECK_AFTER, ChanceWatch
from autoprune.evaluation.evaluator import Evaluator, EvaluatorConfig
from autoprune.report.run_record import RunRecord, report_sections
from autoprune.trial import Score

FAST = {"bn_batches": 2, "finetune_steps": 0, "val_batches": 2}


def _score(accuracy: float, *, rung: int = 0, status: str = "ok") -> Score:
    return Score(accuracy, 1.0, 1, 1, True, 0, 0.1, rung=rung, status=status, first_accuracy=accuracy)


def test_warns_once_when_the_first_candidates_all_score_near_chance() -> None:
    watch = ChanceWatch(0.1, EvaluatorConfig(finetune_steps=0))
    warnings = [watch.observe(_score(float("nan"), status="failed")), watch.observe(_score(0.15, rung=2))]
    warnings += [watch.observe(_score(0.1 + 0.009 * i)) for i in range(CHECK_AFTER + 4)]
    assert warnings[:CHECK_AFTER] == [None] * CHECK_AFTER  # a failure does not count; a later rung's score does
    assert "at most 17.2% (chance: 10.0%)" in warnings[CHECK_AFTER]
    assert "finetune_steps=30" in warnings[CHECK_AFTER]
    assert warnings[CHECK_AFTER + 1:] == [None] * 5


def test_one_candidate_well_above_chance_means_no_warning() -> None:
    watch = ChanceWatch(0.1, EvaluatorConfig(finetune_steps=10))
    assert [watch.observe(_score(0.35 if i == 3 else 0.1)) for i in range(CHECK_AFTER)] == [None] * CHECK_AFTER


def test_under_the_cascade_the_screens_searchers_learn_from_are_watched() -> None:
    watch = ChanceWatch(0.1, EvaluatorConfig(finetune_steps=30), screened=True)
    promoted = Score(0.8, 1.0, 1, 1, True, 30, 0.1, rung=1, first_accuracy=0.12)  # finetuned well, screened at noise
    warnings = [watch.observe(promoted)] + [watch.observe(_score(0.11)) for _ in range(CHECK_AFTER - 1)]
    assert warnings[:-1] == [None] * (CHECK_AFTER - 1) and watch.column == "first_accuracy"
    assert "adaptive-BN screens score at most 12.0%" in warnings[-1] and "scheduler none or asha" in warnings[-1]
    plain = ChanceWatch(0.1, EvaluatorConfig(finetune_steps=30))
    seen = [plain.observe(promoted)] + [plain.observe(_score(0.11)) for _ in range(CHECK_AFTER - 1)]
    assert seen == [None] * CHECK_AFTER  # without the cascade the finetuned 80% is what searchers learn from


def test_a_resumed_search_judges_its_first_scores_once() -> None:
    judged = ChanceWatch(0.1, EvaluatorConfig())
    judged.resume([0.1] * (CHECK_AFTER + 3))  # the first run warned (or not) already
    assert judged.observe(_score(0.1)) is None
    pending = ChanceWatch(0.1, EvaluatorConfig())
    pending.resume([0.1] * (CHECK_AFTER - 1))
    assert "at most 10.0%" in pending.observe(_score(0.1))


@pytest.mark.parametrize(("head", "chance"), [(nn.Identity(), 1 / 10), (nn.Flatten(0), 0.0),
                                              (nn.Linear(10, 1), 0.0), (nn.Unflatten(1, (10, 1)), 1 / 10)])
def test_chance_is_one_over_the_classes_of_dimension_1(head, chance) -> None:
    model = nn.Sequential(small_cnn(in_channels=1), head).train()
    evaluator = Evaluator(model, torch.zeros(2, 1, 8, 8), train_data=[], val_data=[], budget=ap.Budget.flops(0.5),
                          cost_model=None)
    assert evaluator.chance_accuracy() == pytest.approx(chance)
    assert model.training


@pytest.mark.parametrize("blind", [True, False])
def test_a_search_whose_candidates_are_at_chance_says_so(trained_cnn, digits, blind, tmp_path) -> None:
    model = copy.deepcopy(trained_cnn)
    if blind:  # every logit 0: the model always guesses class 0, whatever the pruning
        head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
    events: list[ap.Progress] = []
    ap.search(
        model,
        digits.example_inputs(),
        budget=ap.Budget.flops(0.7),
        train_data=digits.train,
        val_data=digits.val,
        searcher="random",
        trials=CHECK_AFTER,
        evaluator=FAST,
        final={"rescore": 0, "steps": 0, "measure_latency": False},
        run={"progress": events.append, "dir": tmp_path / "run"},
    )
    warnings = [e.message for e in events if e.stage == "warning"]
    sections = {s.key: s for s in report_sections(RunRecord.read(tmp_path / "run"))}
    if blind:
        assert len(warnings) == 1 and "cannot rank candidates" in warnings[0] and "(chance: 10.0%)" in warnings[0]
        assert sections["near-chance"].note == warnings[0]  # the report and the dashboard show it too
    else:
        assert warnings == [] and "near-chance" not in sections


def test_a_resumed_search_counts_the_scores_of_its_first_part(trained_cnn, digits, tmp_path) -> None:
    model = copy.deepcopy(trained_cnn)
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    options = dict(budget=ap.Budget.flops(0.7), train_data=digits.train, val_data=digits.val, searcher="random",
                   final={"rescore": 0, "steps": 0, "measure_latency": False}, evaluator=FAST)
    run = tmp_path / "run"
    first: list[ap.Progress] = []
    ap.search(model, digits.example_inputs(), trials=CHECK_AFTER // 2, **options,
              run={"dir": run, "progress": first.append})
    resumed: list[ap.Progress] = []
    ap.search(model, digits.example_inputs(), trials=CHECK_AFTER, **options,
              run={"dir": run, "resume": True, "progress": resumed.append})
    assert [e.stage for e in first].count("warning") == 0
    assert [e.stage for e in resumed].count("warning") == 1  # the 10th score overall, not the 10th of this part
