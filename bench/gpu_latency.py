"""CUDA latency: the lookup table built on the GPU, a latency-budgeted search there, and the pruned model timed.

On a machine with a CUDA GPU: for ResNet-18 (3x32x32, fresh weights) at batch 64, builds the eager latency table
on ``cuda`` (CUDA events, after warm-up: ``search_spaces.measure``), measures its error on random policies, and
runs a latency-budgeted search (``Budget.latency(0.6, batch=64, device="cuda")``) on Fashion-MNIST-shaped random
data; then times the exported model side by side with the unpruned one on the GPU. Rows go to
bench/results/gpu_latency.json. On a machine without one it says so in one line and exits 0.

    python bench/gpu_latency.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, write_json

BATCH, FRACTION, POLICIES = 64, 0.6, 10


def _data(batches: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [(torch.randn(BATCH, 3, 32, 32, generator=generator), torch.randint(0, 10, (BATCH,), generator=generator))
            for _ in range(batches)]


def main() -> int:
    if not torch.cuda.is_available():
        print("gpu_latency: no CUDA GPU on this machine; nothing measured")
        return 0
    import autoprune as ap
    from autoprune.builtins.models import build_model
    from search_spaces.cost import CostModel
    from search_spaces.measure import latency_ratio

    model = build_model("resnet18", in_channels=3, num_classes=10).eval()
    inputs = torch.zeros(1, 3, 32, 32)
    space = ap.SearchSpace.from_model(model, inputs)
    start = time.perf_counter()
    table = ap.latency_table(model, space, inputs, batch=BATCH, device="cuda", rebuild=True)
    build_seconds = time.perf_counter() - start
    cost_model, rows = CostModel(space, table), []
    generator = torch.Generator().manual_seed(0)
    for _ in range(POLICIES):
        ratios = {g.name: float(torch.rand(1, generator=generator)) * g.max_ratio for g in space}
        pruned = ap.apply_policy(model, space.policy(ratios), inputs)
        measured, _, _ = latency_ratio(pruned, model, torch.zeros(BATCH, 3, 32, 32), device="cuda")
        predicted = cost_model.cost(ratios).latency_ms / table.base_ms
        rows.append({"predicted_ratio": predicted, "measured_ratio": measured, "error": predicted / measured - 1})
    data = _data()
    result = ap.search(model, inputs, budget=ap.Budget.latency(FRACTION, batch=BATCH, device="cuda"),
                       train_data=data, val_data=data, searcher="random", trials=6,
                       evaluator={"finetune_steps": 0, "bn_batches": 1, "device": "cuda"}, final={"steps": 0})
    ratio, ms, base_ms = latency_ratio(result.pruned_model, model, torch.zeros(BATCH, 3, 32, 32), device="cuda",
                                       rounds=7)
    payload: dict[str, Any] = {
        "config": {"model": "resnet18", "batch": BATCH, "fraction": FRACTION, "device": torch.cuda.get_device_name()},
        "table": {"build_seconds": build_seconds, "base_ms": table.base_ms, "rows": rows,
                  "median_abs_error": sorted(abs(r["error"]) for r in rows)[len(rows) // 2]},
        "search": {"latency_ratio": ratio, "latency_ms": ms, "baseline_ms": base_ms,
                   "met_within_5pct": ratio <= FRACTION * 1.05, "flops_ratio": result.summary.flops_ratio,
                   "speed": [c.to_dict() for c in result.summary.speed]},
    }
    write_json(RESULTS / "gpu_latency.json", payload)
    print(payload["table"]["median_abs_error"], payload["search"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
