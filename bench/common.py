"""Shared helpers for benchmark scripts: machine and version info, result files."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import platform
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
# The searchers the benchmarks compare, in the tables' order.
METHODS = ("uniform", "global", "random", "sensitivity", "optuna", "amc")
DOCS = Path(__file__).parent.parent / "docs"


LOCK = Path(__file__).parent.parent / "constraints.txt"


def machine() -> dict[str, Any]:
    """CPU, core count, Python and library versions, and the hash of the lock file they were installed from."""
    import torch

    packages = ("torch", "torchvision", "torch-pruning", "numpy", "optuna", "stable-baselines3", "ray")
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "versions": {p: version(p) for p in packages},
        "lock_sha256": hashlib.sha256(LOCK.read_bytes()).hexdigest() if LOCK.is_file() else None,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def write_result(name: str, payload: dict[str, Any]) -> Path:
    """Write ``bench/results/<name>.json`` with the machine info included."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2) + "\n")
    return path


# The evaluator fidelity every search benchmark uses: the product's default (30 finetune steps, 4 validation
# batches), which bench/fidelity.py picked (docs/benchmarks.md, "Candidate score fidelity").
FIDELITY = {"bn_batches": 5, "finetune_steps": 30, "val_batches": 4, "lr": 0.01}
# 8 epochs: the baseline is retrained on every fresh machine (weights are never committed), ~35 min on one thread
BASELINE = {"model": "resnet20", "dataset": "fashion-mnist", "epochs": 8}
# Per-model baseline epochs; MobileNetV2 takes ~2.8x ResNet-20's time per step here, so 4 epochs (~1 h on one thread)
BASELINE_EPOCHS = {"resnet20": 8, "mobilenet_v2": 4, "vit_p4": 8}
QUICK_BASELINE = {"model": "small_cnn", "dataset": "digits", "epochs": 5}
QUICK_FIDELITY = {"bn_batches": 2, "finetune_steps": 2, "val_batches": 2, "lr": 0.01}


def add_fidelity_options(parser: argparse.ArgumentParser) -> None:
    """Baseline and evaluator options shared by the search benchmarks, and ``--quick``."""
    parser.add_argument("--model", default=BASELINE["model"])
    parser.add_argument("--dataset", default=BASELINE["dataset"])
    parser.add_argument("--epochs", type=int, help="baseline training epochs (default: per model, BASELINE_EPOCHS)")
    parser.add_argument("--bn-batches", type=int, default=FIDELITY["bn_batches"])
    parser.add_argument("--finetune-steps", type=int, default=FIDELITY["finetune_steps"])
    parser.add_argument("--val-batches", type=int, default=FIDELITY["val_batches"])
    parser.add_argument("--quick", action="store_true",
                        help="small CNN on digits, tiny fidelity, results under bench/results/quick")


def apply_quick(args: argparse.Namespace, full: Path, quick: Path) -> argparse.Namespace:
    """With ``--quick``: the small model and fidelity; ``args.results`` defaults to ``quick`` or ``full``."""
    if args.quick:
        for key, value in {**QUICK_BASELINE, **QUICK_FIDELITY}.items():
            setattr(args, key, value)
    if args.results is None:
        args.results = str(quick if args.quick else full)
    if args.epochs is None:
        args.epochs = baseline_epochs(args.model)
    return args


def baseline_epochs(model: str) -> int:
    """The epochs a model's benchmark baseline is trained for."""
    return BASELINE_EPOCHS.get(model, BASELINE["epochs"])


def fidelity(args: argparse.Namespace) -> dict[str, Any]:
    """The evaluator options a benchmark's arguments ask for."""
    return {"bn_batches": args.bn_batches, "finetune_steps": args.finetune_steps,
            "val_batches": args.val_batches, "lr": FIDELITY["lr"]}


def load_baseline(args: argparse.Namespace) -> tuple[Any, Any, dict[str, Any]]:
    """The trained baseline (trained once, then from the cache), its data and checkpoint info.

    Training logs one line per epoch (unless the script configured logging itself). It runs on one torch thread
    (the caller's thread count is restored afterwards), so a lost cache retrains the same baseline bit for bit.
    """
    import torch

    from autoprune.composition.config import SearchConfig, load_model_and_data
    from autoprune.evaluation.training import TrainConfig

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return load_model_and_data(SearchConfig(model=args.model, dataset=args.dataset,
                                                train=TrainConfig(epochs=args.epochs)))
    finally:
        torch.set_num_threads(threads)


def changed_settings(saved: dict[str, Any], settings: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The settings an earlier result was made with that differ from this run's: ``{key: (earlier, now)}``."""
    return {key: (saved.get(key), value) for key, value in settings.items() if saved.get(key) != value}


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` with the machine info, atomically (a stopped run never leaves half a file)."""
    from search_spaces.ground.io import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"machine": machine(), **payload}, indent=2) + "\n")
    return path


def mean_sd(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    """``mean ± sd`` of ``values`` times ``scale`` (the mean alone for one value), for the rendered tables."""
    import statistics

    mean = statistics.mean(values) * scale
    if len(values) < 2:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values) * scale:.{digits}f}"


def accuracy_drop(row: dict[str, Any]) -> float:
    """A benchmark row's test accuracy lost against its unpruned baseline."""
    return row["baseline_test_accuracy"] - row["test_accuracy"]
