"""The schedule verdict of the sparsity benchmark's page: AGP against one-shot, paired by seed."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
from report_sparsity import recovery_section, schedule_verdict


def rows(*accuracies: float) -> list[dict[str, float]]:
    return [{"seed": seed, "test_accuracy": accuracy} for seed, accuracy in enumerate(accuracies)]


def test_agp_ahead_on_average_is_at_least_as_good() -> None:
    (_, line) = schedule_verdict(rows(0.90, 0.91, 0.92), rows(0.91, 0.91, 0.93), "agp", 300)
    assert line.startswith("`agp` vs one-shot") and "+0.67 ± 0.58 pt" in line and line.endswith("at least as good.")


def test_a_loss_inside_the_paired_spread_is_called_a_tie_and_a_larger_one_a_loss() -> None:
    tie = schedule_verdict(rows(0.900, 0.910, 0.900), rows(0.905, 0.900, 0.900), "agp", 300)[-1]
    assert "-0.17 ± 0.76 pt" in tie and "a tie within noise" in tie
    loss = schedule_verdict(rows(0.90, 0.91, 0.92), rows(0.88, 0.90, 0.91), "agp", 300)[-1]
    assert "-1.33 ± 0.58 pt" in loss and loss.endswith(": worse.")


def test_only_seeds_run_both_ways_are_compared() -> None:
    one_shot, agp = rows(0.90, 0.91), rows(0.95)  # seed 1 has no AGP row yet
    line = schedule_verdict(one_shot, agp, "agp_early", 1000)[-1]
    assert line.startswith("`agp_early` vs one-shot at 90%, 1000 steps") and "(1 seeds): +5.00 ± 0.00 pt" in line
    assert schedule_verdict(rows(0.9), [], "agp", 300) == []


def record(variant: str, seed: int, accuracy: float, steps: int) -> dict:
    row = {"experiment": "schedule", "variant": variant, "seed": seed, "test_accuracy": accuracy,
           "baseline_test_accuracy": 0.93, "flops_ratio": 1.0, "nonzeros_ratio": 0.1}
    return {"config": {"model": "resnet20", "final_steps": steps}, "row": row}


def test_the_page_pairs_agp_with_the_one_shot_rows_trained_as_long() -> None:
    records = [record("one_shot", 0, 0.90, 300), record("agp", 0, 0.89, 300),
               record("one_shot", 0, 0.91, 1000), record("agp", 0, 0.93, 1000)]
    lines = recovery_section(records)
    assert "| schedule | one_shot | 300 | 1 | 90.00 |" in "\n".join(lines)
    assert "| schedule | agp | 1000 | 1 | 93.00 |" in "\n".join(lines)
    verdicts = [line for line in lines if line.startswith("`agp` vs one-shot")]
    assert verdicts == ["`agp` vs one-shot at 90%, 300 steps, paired by seed (1 seeds): -1.00 ± 0.00 pt: worse.",
                        "`agp` vs one-shot at 90%, 1000 steps, paired by seed (1 seeds): +2.00 ± 0.00 pt: "
                        "at least as good."]


def test_rows_of_different_baselines_are_never_pooled() -> None:
    old, new = record("one_shot", 0, 0.90, 300), record("one_shot", 1, 0.80, 300)
    new["config"]["baseline_sha256"] = "0123456789abcdef"  # the same recipe retrained elsewhere: other weights
    table = "\n".join(recovery_section([old, new]))
    assert "| schedule | one_shot (earlier baseline) | 300 | 1 | 90.00 |" in table
    assert "| schedule | one_shot (baseline 01234567) | 300 | 1 | 80.00 |" in table
