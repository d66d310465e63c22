"""FLOPs ratio vs measured latency ratio in every CPU runtime, and how well the latency lookup table predicts.

Part 1 (``speedups``): ResNet-20 (1x28x28), MobileNetV2 and ResNet-18 (3x32x32), and timm's efficientnet_b0 and
convnext_atto (3x64x64, random weights), pruned uniformly to 50% and 30% of their FLOPs with the default settings
(each model's preset, or none); latency at batch 1 and 64 on one CPU thread in eager PyTorch, ``torch.compile``,
AOTInductor and ONNX Runtime (each built as the export builds it: ``search_spaces.runtimes``), each pruned model
against its own unpruned model in the same runtime, alternating rounds (``latency_ratio``). Latency does not
depend on the weights, so the models are freshly initialized.

Part 2 (``table_error``): per model and runtime, the lookup table (autoprune.latency.table) against measurement on
random policies (batch 1, one thread): the error of the predicted latency ratio against a side-by-side measured
ratio, and how long building the table took.

    python bench/latency_speedup.py             # writes bench/results/latency_speedup.json
    python bench/latency_speedup.py --quick     # small CNN only, eager/onnxruntime, 6 policies
    python bench/latency_speedup.py --speed-only --models resnet20   # part 1 only, rows merged by model
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, write_json

from autoprune.builtins.models import build_model
from autoprune.latency.table import build_latency_table
from autoprune.prune.channels import prune
from search_spaces import SearchSpace, default_preset
from search_spaces.budget import Budget
from search_spaces.cost import CostModel, uniform_ratios
from search_spaces.measure import count_flops, latency_ratio
from search_spaces.runtimes import RUNTIMES

MODELS = {"resnet20": (1, 28), "mobilenet_v2": (3, 32), "resnet18": (3, 32), "efficientnet_b0": (3, 64),
          "convnext_atto": (3, 64), "small_cnn": (1, 8)}
TIMM = ("efficientnet_b0", "convnext_atto")
DEFAULT_MODELS = ("resnet20", "mobilenet_v2", "resnet18", "efficientnet_b0", "convnext_atto")
RATIO_ROUNDS = 5  # alternating rounds per measured ratio
TABLE_POLICIES = {"eager": 30, "onnxruntime": 30, "compiled": 6, "aoti": 6}  # compiling runtimes: ~15 s a model


def build(name: str) -> tuple[nn.Module, torch.Tensor]:
    """The model with fresh weights, and a one-sample input."""
    channels, size = MODELS[name]
    torch.manual_seed(0)
    if name in TIMM:
        model = timm.create_model(name, pretrained=False, num_classes=10)
    else:
        model = build_model(name, in_channels=channels, num_classes=10)
    return model.eval(), torch.zeros(1, channels, size, size)


def variants(name: str, budgets: list[float]) -> list[dict[str, Any]]:
    """The unpruned model and its uniform prunings at each budget, with the default space settings."""
    model, inputs = build(name)
    space = SearchSpace.from_model(model, inputs, preset=default_preset(name))
    rows = [{"model": name, "net": model}]
    base_flops = count_flops(model, inputs)
    for budget in budgets:
        ratios = uniform_ratios(CostModel(space), Budget.flops(budget))
        pruned = prune(model, space.policy(ratios), inputs, space=space).model.eval()
        rows.append({"model": name, "budget": budget, "round_to": space.round_to, "net": pruned,
                     "flops_ratio": count_flops(pruned, inputs) / base_flops})
    return rows


def speedups(names: list[str], budgets: list[float], batches: list[int], runtimes: list[str]) -> list[dict]:
    out = []
    for name in names:
        models = variants(name, budgets)
        channels, size = MODELS[name]
        for batch in batches:
            inputs = (torch.randn(batch, channels, size, size),)
            for runtime in runtimes:
                torch._dynamo.reset()
                for row in models[1:]:
                    ratio, ms, base_ms = latency_ratio(row["net"], models[0]["net"], inputs, runtime=runtime,
                                                       rounds=RATIO_ROUNDS)
                    out.append({k: v for k, v in row.items() if k != "net"} | {
                        "batch": batch, "runtime": runtime, "latency_ms": ms, "baseline_ms": base_ms,
                        "latency_ratio": ratio})
                    print(out[-1], flush=True)
    return out


def table_error(name: str, runtime: str, policies: int, seed: int = 0) -> dict[str, Any]:
    """Predicted vs side-by-side measured latency ratio of random policies for one model in ``runtime``."""
    model, inputs = build(name)
    space = SearchSpace.from_model(model, inputs, preset=default_preset(name))
    start = time.perf_counter()
    table = build_latency_table(model, space, inputs, runtime=runtime)
    build_seconds = time.perf_counter() - start
    cost_model = CostModel(space, table)
    rng = random.Random(seed)
    rows = []
    for _ in range(policies):
        ratios = {g.name: rng.uniform(0, g.max_ratio) for g in space}
        pruned = prune(model, space.policy(ratios), inputs, space=space).model.eval()
        predicted = cost_model.cost(ratios).latency_ms / table.base_ms
        ratio, measured_ms, base_ms = latency_ratio(pruned, model, inputs, rounds=RATIO_ROUNDS, runtime=runtime)
        rows.append({"predicted_ratio": predicted, "measured_ratio": ratio, "measured_ms": measured_ms,
                     "baseline_ms": base_ms, "ratio_error": predicted / ratio - 1})
        print(name, runtime, rows[-1], flush=True)
    return {"model": name, "runtime": runtime, "policies": policies, "build_seconds": build_seconds,
            "load_average": os.getloadavg()[0],  # the machine's 1-minute load when the rows were done
            "base_ms": table.base_ms, "median_abs_ratio_error": statistics.median(abs(r["ratio_error"]) for r in rows),
            "max_abs_ratio_error": max(abs(r["ratio_error"]) for r in rows), "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated (default all five)")
    parser.add_argument("--runtimes", default=",".join(RUNTIMES), help="comma-separated, of " + ", ".join(RUNTIMES))
    parser.add_argument("--table-models", default="resnet20", help="models whose table error is measured")
    parser.add_argument("--results", help="result file (default bench/results/latency_speedup.json)")
    parser.add_argument("--speed-only", action="store_true", help="part 1 only (rows merged into the results)")
    parser.add_argument("--table-only", action="store_true", help="part 2 only (rows merged into the results)")
    parser.add_argument("--quick", action="store_true", help="small CNN (8x8 digits), eager and onnxruntime")
    args = parser.parse_args()
    if args.quick:
        args.models, args.table_models, args.runtimes = "small_cnn", "small_cnn", "eager,onnxruntime"
    args.results = Path(args.results or RESULTS / ("quick" if args.quick else "") / "latency_speedup.json")
    torch.set_num_threads(1)
    names, runtimes, tables = args.models.split(","), args.runtimes.split(","), args.table_models.split(",")
    unknown = [n for n in {*names, *tables} if n not in MODELS] + [r for r in runtimes if r not in RUNTIMES]
    if unknown:
        parser.error(f"unknown --models/--runtimes {unknown}; accepted: {', '.join([*MODELS, *RUNTIMES])}")
    payload: dict[str, Any] = {"config": {"budgets": [0.5, 0.3], "batches": [1, 64], "threads": 1,
                                          "defaults": "each model's preset, or round_to from the model's widths"},
                               "table_error": [], "speedups": []}
    if args.results.exists():  # rows of other models and runtimes are kept: runs can be split and resumed
        kept = json.loads(args.results.read_text())
        payload["speedups"] = [r for r in kept.get("speedups", []) if "runtime" in r and (
            args.table_only or not (r["model"] in names and r["runtime"] in runtimes))]
        payload["table_error"] = [r for r in kept.get("table_error", []) if "runtime" in r and (
            args.speed_only or not (r["model"] in tables and r["runtime"] in runtimes))]
    for name in ([] if args.table_only else names):  # written after each model, so a stopped run keeps its rows
        payload["speedups"] += speedups([name], [0.5, 0.3], [1, 64], runtimes)
        write_json(args.results, payload)
    for name in ([] if args.speed_only else tables):
        for runtime in runtimes:
            policies = TABLE_POLICIES[runtime] if not args.quick else 6
            payload["table_error"].append(table_error(name, runtime, policies))
            write_json(args.results, payload)
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
