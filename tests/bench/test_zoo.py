"""The model zoo (bench/zoo.py): real torchvision and timm architectures prune within budget or are refused at
trace time with a message; none breaks after tracing. One cheap model per family here; the whole zoo is the
benchmark's (``python bench/zoo.py``, docs/zoo.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
from zoo import BUDGET, TRANSFORMERS, ZOO, run_one

# one of the cheapest models of every family (about a minute in all on an idle 2-core machine)
SUBSET = ("resnet10t", "squeezenet1_1", "mobilenet_v3_small", "regnetx_002", "skresnet18", "mixnet_s",
          "res2net50_14w_8s", "cs3darknet_s", "ghostnet_100", "shufflenet_v2_x0_5", "convnext_atto",
          "vit_tiny_patch16_224", "swin_tiny_patch4_window7_224", "mobilevit_xxs")
# every attention module of these prunes by whole heads, and the pruned model exports with the same outputs
HEADS_PRUNE = ("vit_tiny_patch16_224", "swin_tiny_patch4_window7_224", "mobilevit_xxs")


def test_the_zoo_covers_every_family_of_the_issue_and_the_subset_every_family_of_the_zoo() -> None:
    families = {entry.family for entry in ZOO}
    assert len(ZOO) >= 40 and {entry.source for entry in ZOO} == {"torchvision", "timm"}
    assert sum(entry.family in TRANSFORMERS for entry in ZOO) >= 8
    for needed in ("grouped", "split attention", "mixed-kernel", "Res2Net", "CSP", "channel-padding",
                   "channel shuffle", "vision transformer", "windowed", "hybrid", "layer scale", "concat", "plain"):
        assert any(needed in family for family in families), needed
    assert {entry.family for entry in ZOO if entry.name in SUBSET} == families


@pytest.mark.slow
@pytest.mark.parametrize("entry", [e for e in ZOO if e.name in SUBSET], ids=lambda e: e.name)
def test_zoo_models_prune_within_budget_or_are_refused_at_trace_time(entry) -> None:
    row = run_one(entry)
    assert row["status"] != "failed", row["message"]
    if row["status"] == "pruned":
        assert row["counted_flops"] == row["predicted_flops"] <= BUDGET * row["base_flops"]
    else:
        assert "cannot" in row["message"] or "no channel group" in row["message"] or "took more than" in row["message"]
    if entry.name in HEADS_PRUNE:
        assert row["status"] == "pruned"
        assert row["attention"] == row["attention_pruned"] > 0 and row["attention_left"] == {}
        assert row["export"] == {"torch.export": "match", "onnx": "match"}
