"""The model zoo (bench/zoo.py): real torchvision and timm architectures prune within budget or are refused at
trace time with a message; none breaks after tracing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "bench"))
from zoo import BUDGET, ZOO, run_one

pytestmark = pytest.mark.slow  # every zoo model traced, checked and pruned: minutes


def test_the_zoo_covers_every_family_of_the_issue() -> None:
    families = {entry.family for entry in ZOO}
    assert len(ZOO) >= 30 and {entry.source for entry in ZOO} == {"torchvision", "timm"}
    for needed in ("grouped", "split attention", "mixed-kernel", "Res2Net", "CSP", "channel-padding",
                   "channel shuffle", "attention", "layer scale", "concat", "plain"):
        assert any(needed in family for family in families), needed


def test_zoo_models_prune_within_budget_or_are_refused_at_trace_time() -> None:
    rows = [run_one(entry) for entry in ZOO]
    failed = [(r["model"], r["message"]) for r in rows if r["status"] == "failed"]
    assert not failed
    for row in rows:
        if row["status"] == "pruned":
            assert row["counted_flops"] == row["predicted_flops"] <= BUDGET * row["base_flops"], row["model"]
        else:
            assert row["status"] == "refused" and ("cannot" in row["message"] or "no channel group" in row["message"])
    pruned = sum(r["status"] == "pruned" for r in rows)
    assert pruned >= 0.9 * len(rows), [r["model"] for r in rows if r["status"] != "pruned"]
