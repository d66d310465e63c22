"""FLOPs ratio vs measured latency ratio, and how well the latency lookup table predicts latency.

Part 1 (``speedups``): ResNet-20 (1x28x28), MobileNetV2 and ResNet-18 (3x32x32) pruned uniformly to 50% and
30% of their FLOPs, with ``round_to`` 1 and 8; latency at batch 1 and 64 on one CPU thread in eager PyTorch,
``torch.compile`` and onnxruntime, each pruned model against its own unpruned model in the same runtime.
Latency does not depend on the weights, so the models are freshly initialized.

Part 2 (``table_error``): per model, the lookup table (autoprune.latency.table) against measurement on 30
random policies (batch 1, one thread): the error of the predicted latency (ms) and of the predicted latency
ratio against a side-by-side measured ratio. Each policy's ratio is measured twice: how much the two disagree
(``median_abs_ratio_noise``) is the machine's noise floor for that error.

    python bench/latency_speedup.py             # writes bench/results/latency_speedup.json
    python bench/latency_speedup.py --quick     # small CNN only, eager/onnxruntime, 6 policies
    python bench/latency_speedup.py --table-only  # remeasure part 2, keep part 1's rows from the results file
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils import benchmark

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, write_json

from autoprune.builtins.models import build_model
from autoprune.latency.table import build_latency_table
from autoprune.prune.channels import prune
from autoprune.prune.export import export_model
from search_spaces import SearchSpace, default_preset
from search_spaces.budget import Budget
from search_spaces.cost import CostModel, uniform_ratios
from search_spaces.measure import alternating_ratio, count_flops, latency_ratio, measure_latency_ms, with_batch

MODELS = {"resnet20": (1, 28), "mobilenet_v2": (3, 32), "resnet18": (3, 32), "small_cnn": (1, 8)}
DEFAULT_MODELS = ("resnet20", "mobilenet_v2", "resnet18")
RUNTIMES = ("eager", "compiled", "onnxruntime")
RATIO_ROUNDS = 7  # alternating rounds per held-out ratio measurement


def timer(model: nn.Module, inputs: tuple[torch.Tensor, ...], runtime: str, tmp: str) -> Callable[[], float]:
    """A function measuring one forward pass (median ms, one thread) of ``model`` in ``runtime``."""
    if runtime == "eager":
        return lambda: measure_latency_ms(model, inputs, min_run_time=0.2)
    if runtime == "compiled":
        compiled = torch.compile(model, dynamic=False)
        return lambda: measure_latency_ms(compiled, inputs, min_run_time=0.2)
    import onnxruntime

    path = export_model(model, inputs[:1], tmp, ["onnx"])["onnx"]["path"]
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    feed = {i.name: x.numpy() for i, x in zip(session.get_inputs(), inputs, strict=True)}
    session.run(None, feed)
    clock = benchmark.Timer(stmt="session.run(None, feed)", globals={"session": session, "feed": feed})
    return lambda: clock.blocked_autorange(min_run_time=0.2).median * 1e3


def variants(name: str, budgets: list[float]) -> list[dict[str, Any]]:
    """The unpruned model and its uniform prunings at each budget and round_to."""
    channels, size = MODELS[name]
    model = build_model(name, in_channels=channels, num_classes=10).eval()
    inputs = torch.zeros(1, channels, size, size)
    rows = [{"model": name, "net": model}]
    base_flops = count_flops(model, inputs)
    for round_to in (1, 8):
        space = SearchSpace.from_model(model, inputs, preset=default_preset(name), round_to=round_to)
        for budget in budgets:
            ratios = uniform_ratios(CostModel(space), Budget.flops(budget))
            pruned = prune(model, space.policy(ratios), inputs, space=space).model.eval()
            rows.append({"model": name, "budget": budget, "round_to": round_to, "net": pruned,
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
                with tempfile.TemporaryDirectory() as tmp:
                    base = timer(models[0]["net"], inputs, runtime, tmp + "/base")
                    for row in models[1:]:
                        pruned = timer(row["net"], inputs, runtime, tmp + "/pruned")
                        ratio, ms, base_ms = alternating_ratio(pruned, base, rounds=3)
                        out.append({k: v for k, v in row.items() if k != "net"} | {
                            "batch": batch, "runtime": runtime, "latency_ms": ms, "baseline_ms": base_ms,
                            "latency_ratio": ratio})
                        print(out[-1], flush=True)
    return out


def table_error(name: str, policies: int, seed: int = 0) -> dict[str, Any]:
    """Predicted vs measured latency of random policies for one model (batch 1, one thread)."""
    channels, size = MODELS[name]
    model = build_model(name, in_channels=channels, num_classes=10).eval()
    inputs = torch.zeros(1, channels, size, size)
    space = SearchSpace.from_model(model, inputs, preset=default_preset(name))
    start = time.perf_counter()
    table = build_latency_table(model, space, inputs)
    build_seconds = time.perf_counter() - start
    cost_model = CostModel(space, table)
    rng = random.Random(seed)
    rows = []
    for _ in range(policies):
        ratios = {g.name: rng.uniform(0, g.max_ratio) for g in space}
        pruned = prune(model, space.policy(ratios), inputs, space=space).model.eval()
        predicted = cost_model.cost(ratios).latency_ms
        measured = measure_latency_ms(pruned, with_batch(inputs, 1))
        # the ratio is measured twice, independently: their disagreement is the measurement's own noise floor,
        # below which no table error can be resolved; the table is judged against their geometric mean
        first, second = (latency_ratio(pruned, model, inputs, rounds=RATIO_ROUNDS)[0] for _ in range(2))
        ratio = (first * second) ** 0.5
        rows.append({"predicted_ms": predicted, "measured_ms": measured,
                     "error": predicted / measured - 1,
                     "predicted_ratio": predicted / table.base_ms, "measured_ratio": ratio,
                     "measured_ratios": [first, second], "ratio_noise": first / second - 1,
                     "ratio_error": predicted / table.base_ms / ratio - 1})
    return {"model": name, "policies": policies, "build_seconds": build_seconds, "base_ms": table.base_ms,
            "median_abs_error": statistics.median(abs(r["error"]) for r in rows),
            "median_abs_ratio_error": statistics.median(abs(r["ratio_error"]) for r in rows),
            "median_abs_ratio_noise": statistics.median(abs(r["ratio_noise"]) for r in rows),
            "max_abs_error": max(abs(r["error"]) for r in rows), "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated (default all three)")
    parser.add_argument("--runtimes", default=",".join(RUNTIMES), help="comma-separated eager,compiled,onnxruntime")
    parser.add_argument("--policies", type=int, default=30, help="random policies for the table error (default 30)")
    parser.add_argument("--results", help="result file (default bench/results/latency_speedup.json)")
    parser.add_argument("--table-only", action="store_true",
                        help="measure only the table error; keep the speedup rows already in the results file")
    parser.add_argument("--quick", action="store_true",
                        help="small CNN (8x8 digits), eager and onnxruntime, 6 policies")
    args = parser.parse_args()
    if args.quick:
        args.models, args.runtimes, args.policies = "small_cnn", "eager,onnxruntime", 6
    args.results = args.results or str(RESULTS / ("quick" if args.quick else "") / "latency_speedup.json")
    torch.set_num_threads(1)
    names, runtimes = args.models.split(","), args.runtimes.split(",")
    unknown = [n for n in names if n not in MODELS] + [r for r in runtimes if r not in RUNTIMES]
    if unknown:
        parser.error(f"unknown --models/--runtimes {unknown}; accepted: {', '.join([*MODELS, *RUNTIMES])}")
    payload: dict[str, Any] = {
        "config": {"models": [], "runtimes": runtimes, "budgets": [0.5, 0.3], "batches": [1, 64], "threads": 1,
                   "policies": args.policies},
        "table_error": [], "speedups": [],
    }
    if args.table_only:
        kept = json.loads(Path(args.results).read_text())
        payload["config"]["runtimes"], payload["speedups"] = kept["config"]["runtimes"], kept["speedups"]
    for name in names:  # written after each model, so a stopped run keeps what it measured
        payload["table_error"].append(table_error(name, args.policies))
        if not args.table_only:
            payload["speedups"] += speedups([name], [0.5, 0.3], [1, 64], runtimes)
        payload["config"]["models"].append(name)
        write_json(Path(args.results), payload)
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
