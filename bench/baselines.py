"""Train (once; then from the cache) the benchmark baselines on Fashion-MNIST and report their test accuracy.

    python bench/baselines.py                          # ResNet-20, 8 epochs (~35 min on one thread when not cached)
    python bench/baselines.py --models mobilenet_v2    # 4 epochs (~1 h on one thread); other models' rows are kept
    python bench/baselines.py --quick                  # small CNN on digits
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import BASELINE, QUICK_BASELINE, RESULTS, baseline_epochs, load_baseline, write_json

from autoprune.evaluation.evaluator import validate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=BASELINE["model"], help="comma-separated (default resnet20)")
    parser.add_argument("--dataset", default=BASELINE["dataset"])
    parser.add_argument("--epochs", type=int, help="training epochs (default: per model, common.BASELINE_EPOCHS)")
    parser.add_argument("--results", help="result file (default bench/results/baselines.json)")
    parser.add_argument("--quick", action="store_true", help="small CNN on digits")
    args = parser.parse_args()
    if args.quick:
        args.models, args.dataset, args.epochs = QUICK_BASELINE["model"], QUICK_BASELINE["dataset"], \
            QUICK_BASELINE["epochs"]
    args.results = args.results or str(RESULTS / ("quick" if args.quick else "") / "baselines.json")
    epochs, names = args.epochs, args.models.split(",")
    rows = []
    for name in names:
        args.model, args.epochs = name, epochs or baseline_epochs(name)
        model, data, info = load_baseline(args)
        record = json.loads(Path(info["checkpoint"]).with_suffix(".json").read_text())
        rows.append({"model": name, "dataset": args.dataset, "epochs": args.epochs,
                     "val_accuracy": record["val_accuracy"], "test_accuracy": validate(model, data.test)[0],
                     "checkpoint": Path(info["checkpoint"]).name, "trained_now": info["trained_now"]})
        print(rows[-1], flush=True)
    path = Path(args.results)
    kept = [r for r in json.loads(path.read_text())["rows"] if r["model"] not in names] if path.exists() else []
    write_json(path, {"config": {"dataset": args.dataset}, "rows": kept + rows})
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
