"""The search-quality page's tables: one per model, split when a model's rows were made with other settings."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
from report import goal_lines, quality_section, resumed_lines, study_scale_lines, table_names

SETTINGS = {"bn_batches": 5, "finetune_steps": 0, "val_batches": 4, "evaluations": 100, "final_finetune_steps": 300,
            "epochs": 4, "checkpoint": "c.pt"}


def record(model: str, **changes: object) -> dict:
    return {"config": {**SETTINGS, "model": model, **changes}, "row": {"model": model}}


def test_one_setting_per_model_keeps_the_model_name() -> None:
    assert table_names([record("resnet20"), record("resnet20"), record("mobilenet_v2", finetune_steps=30)]) == [
        "resnet20", "resnet20", "mobilenet_v2"]


def test_a_model_with_two_settings_gets_a_table_per_setting_named_by_what_differs() -> None:
    names = table_names([record("mobilenet_v2"), record("mobilenet_v2", finetune_steps=30, evaluations=50),
                         record("mobilenet_v2", val_batches=8), record("resnet20")])
    assert names == ["mobilenet_v2, finetune steps 0, val batches 4, evaluations 100",
                     "mobilenet_v2, finetune steps 30, val batches 4, evaluations 50",
                     "mobilenet_v2, finetune steps 0, val batches 8, evaluations 100", "resnet20"]


def test_a_missed_ratio_goal_is_put_in_scale_by_uniform_at_a_looser_budget() -> None:
    drops = {"uniform": 0.0230, "global": 0.0237, "amc": 0.0183, "optuna": 0.0193}
    lines = goal_lines("resnet20", drops, {0.5: 0.0109})
    assert "0.80x uniform's 2.30 pt (goal ≤ 0.45x): missed" in lines[-2]
    assert lines[-1] == ("- The ratio goal asks for a drop of at most 1.03 pt at 30% of the FLOPs; "
                         "uniform keeping 50% of the FLOPs drops 1.09 pt.")


def test_a_met_ratio_goal_needs_no_scale() -> None:
    lines = goal_lines("resnet20", {"uniform": 0.04, "global": 0.04, "amc": 0.01, "optuna": 0.03}, {0.5: 0.02})
    assert lines[-1].endswith("(goal ≤ 0.45x): met; it beats both uniform and global.")


def test_tables_of_other_baseline_weights_are_named_by_accuracy_and_weights() -> None:
    names = table_names([record("resnet20", baseline_test_accuracy=0.9339),
                         record("resnet20", baseline_test_accuracy=0.9350, baseline_sha256="0123456789abcdef")])
    assert names == ["resnet20, baseline 93.39%, weights unrecorded", "resnet20, baseline 93.50%, weights 01234567"]


def test_no_scale_line_when_uniform_lost_nothing() -> None:
    lines = goal_lines("resnet20", {"uniform": 0.0, "global": 0.001, "amc": 0.002, "optuna": 0.003}, {0.5: 0.0})
    assert not any("asks for" in line for line in lines)


def test_the_scale_comes_from_uniform_rows_at_looser_budgets_of_the_same_table(tmp_path) -> None:
    def row(method: str, budget: float, accuracy: float) -> dict:
        return {"config": {**SETTINGS, "model": "resnet20", "dataset": "fashion-mnist", "baseline_test_accuracy": 0.93,
                           "baseline_sha256": "f" * 64},
                "row": {"model": "resnet20", "method": method, "budget": budget, "seed": 0, "test_accuracy": accuracy,
                        "baseline_test_accuracy": 0.93, "flops_ratio": budget, "params_ratio": budget,
                        "evaluations": 1, "search_seconds": 1.0, "best_val_accuracy_by_evaluation": [accuracy],
                        "search_val_accuracy": accuracy}}

    records = [row("uniform", 0.3, 0.90), row("global", 0.3, 0.90), row("amc", 0.3, 0.91), row("optuna", 0.3, 0.905),
               row("uniform", 0.5, 0.92), row("amc", 0.5, 0.925), row("uniform", 0.2, 0.80)]
    lines = quality_section(records, tmp_path, "img")
    assert ("- The ratio goal asks for a drop of at most 1.35 pt at 30% of the FLOPs; uniform keeping 50% of the "
            "FLOPs drops 1.00 pt.") in lines


def test_the_fidelity_studys_scale_is_shown_only_under_a_table_of_its_baseline() -> None:
    def policy(name: str, accuracy: float) -> dict:
        return {"policy": name, "config": {"model": "resnet20", "budget": {"flops": 0.3}},
                "baseline_test_accuracy": 0.9339, "ground_truth": {"test_accuracy": accuracy}}

    study = [policy("uniform", 0.9084), policy("ramp", 0.9145), policy("random_1", 0.9155)]
    lines = study_scale_lines(study, {"model": "resnet20", "baseline_test_accuracy": 0.9339})
    assert lines and "the best (`random_1`) drops 1.84 pt, 0.72x the study's uniform policy (2.55 pt)" in lines[0]
    assert study_scale_lines(study, {"model": "resnet20", "baseline_test_accuracy": 0.9336}) == []


def test_rows_resumed_after_an_interruption_are_named_with_how_their_wall_time_is_counted() -> None:
    rows = [{"method": "amc", "budget": 0.3, "seed": 2, "resumed_trials": 28},
            {"method": "uniform", "budget": 0.3, "seed": 2, "resumed_trials": 0},
            {"method": "global", "budget": 0.3, "seed": 0}]
    lines = resumed_lines(rows)
    assert lines[0].startswith("Resumed after an interruption: amc 0.3 seed 2. ")
    assert "uniform" not in lines[0] and "global" not in lines[0]
    assert resumed_lines(rows[1:]) == []
