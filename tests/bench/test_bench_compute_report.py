"""The quality-per-compute section: each search's accuracy against its evaluation compute, and the goal's verdict."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
from report_compute import compute_section


def record(method: str, seed: int, accuracy: float, seconds: float, *, scheduler: dict | None = None,
           evaluations: int = 50, distill: bool = False) -> dict:
    config = {"evaluations": evaluations, **({"scheduler": scheduler} if scheduler else {}),
              **({"final_distill": True} if distill else {})}
    row = {"model": "resnet20", "method": method, "budget": 0.3, "seed": seed, "test_accuracy": accuracy,
           "baseline_test_accuracy": 0.94, "evaluation_seconds": 2 * seconds, "full_scores": evaluations // 4,
           "full_equivalents": seconds / 16, "rescore_seconds": 100.0}
    return {"config": config, "row": row}


CASCADE = {"kind": "cascade", "promote": 0.2}


def test_a_cheaper_search_meets_the_goal_only_with_the_accuracy_and_a_quarter_of_the_compute(tmp_path) -> None:
    reference = [record("random", s, a, 800.0) for s, a in enumerate((0.920, 0.922, 0.924))]  # mean 92.2, sd 0.2
    met = [record("amc", s, a, 190.0, scheduler=CASCADE, evaluations=30) for s, a in enumerate((0.921, 0.920, 0.922))]
    slow = [record("optuna", s, 0.93, 260.0, scheduler=CASCADE, evaluations=30) for s in range(3)]
    worse = [record("random", s, 0.915, 150.0, scheduler=CASCADE, evaluations=30) for s in range(3)]
    distilled = [record("random", s, a + 0.004, 800.0, distill=True) for s, a in enumerate((0.920, 0.922, 0.924))]
    lines = compute_section(reference + met + slow + worse + distilled, tmp_path / "img", "img")
    text = "\n".join(lines)
    assert "Goal: 92.20% - 0.20 pt (the mean of random-50 less its seed sd, 3 seeds)" in text
    assert "- amc with cascade (promote 0.2), 30 candidates: met (0.24x the compute, accuracy reached" in text
    assert "- optuna with cascade (promote 0.2), 30 candidates: not met (0.33x the compute, accuracy reached" in text
    assert ("- random with cascade (promote 0.2), 30 candidates: not met (0.19x the compute, accuracy not "
            "reached") in text
    assert "| random | none | 50 | finetune | 3 | 12 | 1600 | 50.0 | 100 | 92.20 ± 0.20 | 1.80 ± 0.20 |" in text
    assert "random, none, 50 candidates), same steps: +0.40, +0.40, +0.40 pt by seed (mean +0.40)" in text
    assert "random with none" not in text  # the distilled rows are no cheaper search: not judged by the goal
    assert "within 25% of its median evaluation compute (50.0 full evaluations)" in text
    assert (tmp_path / "img" / "quality_per_compute_resnet20_30.png").stat().st_size > 10_000
