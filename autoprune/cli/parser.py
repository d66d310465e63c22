"""The argument parser of ``autoprune``: every subcommand, its help and the function that runs it."""

from __future__ import annotations

import argparse
from importlib.metadata import version

from autoprune.cli.connection import (
    CONNECTION,
    DEFAULT_HOST,
    DEFAULT_PORT,
    DEFAULT_RUNS_ROOT,
    DEFAULT_SERVER,
    DEFAULT_TOKEN_FILE,
    ON_A_RUN,
    SERVER_ENV,
)
from autoprune.cli.flags import add_model_overrides, add_search_overrides
from autoprune.service.auth import TOKEN_ENV

# Each command's function as "module:function", imported only when that command runs: --help stays fast.
COMMANDS = "autoprune.cli.commands"
SERVICE_COMMANDS = "autoprune.cli.service_commands"


def _add_service_commands(sub: argparse._SubParsersAction) -> None:
    """serve, submit and runs."""
    p = sub.add_parser("serve", help="serve searches over HTTP (queue, auth, restart safety); docs/service.md",
                       description="An HTTP/JSON API (OpenAPI docs at /docs) that runs submitted searches, each as a "
                       "driver process, at most --max-concurrent at once. Needs a bearer token: AUTOPRUNE_TOKEN, or "
                       "one created on the first start in RUNS_ROOT/.token and printed once.")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"address to bind (default {DEFAULT_HOST}; any other needs a token)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free port)")
    p.add_argument("--runs-root", default=DEFAULT_RUNS_ROOT,
                   help=f"directory of the run directories (default {DEFAULT_RUNS_ROOT})")
    p.add_argument("--ray-address", help="Ray cluster for runs with executor ray, e.g. auto (ray_cluster.yaml); "
                   "default: each such run starts an embedded local Ray")
    p.add_argument("--max-concurrent", type=int, default=1, help="searches executing at once; the rest wait in order "
                   "(default 1)")
    p.add_argument("--allow-imports", action="store_true",
                   help="accept package.module:factory strings in submitted configs (they run code on this server)")
    p.set_defaults(func=f"{SERVICE_COMMANDS}:cmd_serve")
    p = sub.add_parser("submit", help="submit a search config to a server",
                       description="Send CONFIG.yaml (the same file autoprune search reads) to a server; prints the "
                       f"run id. {CONNECTION}")
    p.add_argument("config", help="YAML or JSON search config")
    _add_connection(p)
    p.add_argument("--wait", action="store_true",
                   help="wait until the run has finished (progress bar), then print its record and baseline vs pruned")
    p.set_defaults(func=f"{SERVICE_COMMANDS}:cmd_submit")
    p = sub.add_parser("runs", help="list runs on a server; show, cancel, resume one; fetch its policy or files",
                       description=f"Runs on a server. {CONNECTION}")
    p.add_argument("action", nargs="?", default="list", choices=["list", *ON_A_RUN],
                   help="list (default); show (a short table, --json for the full record); cancel; resume; policy "
                   "(best_policy.json, printed or --out FILE); files (their names); download (every file, into "
                   "--out DIR, default ./RUN_ID)")
    p.add_argument("id", nargs="?", help=f"run id ({', '.join(ON_A_RUN)})")
    _add_connection(p)
    p.add_argument("--trials", type=int, help="resume: the new total of trials")
    p.add_argument("--json", action="store_true", help="show: the full record as JSON")
    p.add_argument("--out", help="policy: the file to write; download: the directory (default ./RUN_ID)")
    p.set_defaults(func=f"{SERVICE_COMMANDS}:cmd_runs")


def _add_connection(parser: argparse.ArgumentParser) -> None:
    """--server and --token-file, defaulting to what ``autoprune serve`` starts with."""
    parser.add_argument("--server", help=f"server URL (default ${SERVER_ENV}, else {DEFAULT_SERVER}: where autoprune "
                        "serve listens by default)")
    parser.add_argument("--token-file", help=f"file holding the API token when ${TOKEN_ENV} is not set (default "
                        f"{DEFAULT_TOKEN_FILE}: where autoprune serve writes it under its default runs root)")


def _add_search_command(sub: argparse._SubParsersAction) -> None:
    """search: a new search or --resume of one."""
    p = sub.add_parser("search", help="run a search described by a YAML config",
                       description="Run a budgeted pruning search. Writes config.json, trials.csv/.parquet, "
                       "best_policy.json, model/ and summary.json to the run directory.")
    p.add_argument("config", nargs="?", help="YAML config (see docs/config.md); flags below override it")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue the search in RUN_DIR with its saved config, trials and searcher state "
                   "(--trials may raise the total)")
    p.add_argument("--trust-run-dir", action="store_true",
                   help="with --resume: use the import strings (model, dataset, searcher) and the Ray address "
                   "saved in RUN_DIR; without it, a run directory from elsewhere cannot run code or pick a cluster")
    add_search_overrides(p)
    p.set_defaults(func=f"{COMMANDS}:cmd_search")


def _add_sensitivity_command(sub: argparse._SubParsersAction) -> None:
    """sensitivity: one group pruned at a time."""
    p = sub.add_parser("sensitivity", help="prune each group alone at several ratios; write a table and a plot",
                       description="Distiller-style sensitivity analysis: the unpruned model and every group "
                       "pruned alone at each level (fraction of its max ratio), scored by the evaluator. "
                       "Writes sensitivity.csv and sensitivity.png to the run directory.")
    p.add_argument("config", nargs="?", help="YAML config (model, dataset, evaluator, space options)")
    p.add_argument("--levels", help="comma-separated fractions of each group's max ratio (default 0.25,0.5,0.75,1)")
    add_model_overrides(p)
    p.set_defaults(func=f"{COMMANDS}:cmd_sensitivity")


def _add_demo_command(sub: argparse._SubParsersAction) -> None:
    """demo: the quickstart."""
    p = sub.add_parser("demo", help="train a small CNN on digits (cached) and search at 50%% FLOPs",
                       description="The quickstart: small CNN on scikit-learn's digits, random search at 50% FLOPs, "
                       "then the best policy is finetuned and compared with the baseline.")
    p.add_argument("--trials", type=int, help="evaluations (default 40)")
    p.add_argument("--seed", type=int, help="seed (default 0)")
    p.add_argument("--run-dir", help="output directory (default runs/small_cnn-digits-<time>)")
    p.set_defaults(func=f"{COMMANDS}:cmd_demo")


def _add_report_command(sub: argparse._SubParsersAction) -> None:
    """report: a run directory's HTML page."""
    p = sub.add_parser("report", help="write RUN_DIR/report.html, one self-contained page about a run",
                       description="Draw a run directory's files (trials, summary, best policy, sensitivity scan, "
                       "config) into one HTML page that opens offline. Works on a finished run and on one still "
                       "in progress (it shows what exists). Every search writes it at the end too.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run directory of a search")
    p.add_argument("--out", help="where to write the page (default RUN_DIR/report.html)")
    p.set_defaults(func=f"{COMMANDS}:cmd_report")


def _add_train_command(sub: argparse._SubParsersAction) -> None:
    """train: a cached baseline checkpoint."""
    p = sub.add_parser("train", help="train a baseline and cache its checkpoint",
                       description="Train a built-in model on a dataset and cache the checkpoint under "
                       "$AUTOPRUNE_CACHE (default ~/.cache/autoprune); a cached one is reused.")
    p.add_argument("--model", default="small_cnn", help="model name or package.module:factory (default small_cnn)")
    p.add_argument("--dataset", default="digits", help="dataset name or package.module:factory (default digits)")
    p.add_argument("--data-dir", help="dataset directory")
    p.add_argument("--epochs", type=int, default=30, help="training epochs (default 30)")
    p.add_argument("--lr", type=float, default=0.05, help="SGD learning rate, cosine-decayed (default 0.05)")
    p.add_argument("--batch-size", type=int, help="batch size (default: the dataset's)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--retrain", action="store_true", help="train even if a cached checkpoint exists")
    p.set_defaults(func=f"{COMMANDS}:cmd_train")


def _add_sparsity_command(sub: argparse._SubParsersAction) -> None:
    """sparsity: per-tensor sparsity and size on disk."""
    p = sub.add_parser("sparsity", help="per-tensor sparsity and size on disk of a checkpoint",
                       description="Read a state dict (a .pt file, an exported model directory in the dense or "
                       "sparse form, or a run directory) and print, per weight tensor, its shape, non-zeros, "
                       "density, sparsity and share of the model, with totals, and the measured size of the dense "
                       "and sparse forms, raw and gzip-compressed.")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a .pt state dict, a model directory or a run directory")
    p.add_argument("--csv", help="also write the table to this CSV file")
    p.set_defaults(func=f"{COMMANDS}:cmd_sparsity")


def _add_apply_command(sub: argparse._SubParsersAction) -> None:
    """apply: a checkpoint pruned with a saved policy."""
    p = sub.add_parser("apply", help="prune a checkpoint with a saved policy",
                       description="Apply POLICY.json to a trained checkpoint and write the pruned model in the "
                       "--format(s) asked for, each checked for the same outputs as the eager model; "
                       "--finetune-steps recovers its accuracy first and reports it.")
    p.add_argument("policy", help="policy JSON written by a search (best_policy.json)")
    p.add_argument("--checkpoint", required=True, help="trained weights (state dict) of the unpruned model")
    p.add_argument("--out", required=True, help="output directory for the pruned model")
    p.add_argument("--model", default="small_cnn", help="model the checkpoint belongs to (default small_cnn)")
    p.add_argument("--dataset", default="digits", help="dataset that sets the input shape (default digits)")
    p.add_argument("--data-dir", help="dataset directory")
    p.add_argument("--importance", default="l1", help="channel importance (default l1)")
    p.add_argument("--finetune-steps", type=int, metavar="N",
                   help="recalibrate BatchNorm and finetune the pruned model for N SGD steps on the dataset "
                   "before it is written, then print its test accuracy next to the baseline's (0: recalibrate only)")
    p.add_argument("--lr", type=float, help="learning rate of that finetune (default 0.01, the evaluator's)")
    p.add_argument("--format", default="eager",
                   help="comma-separated: eager (state dict + pruning history), sparse (the same weights as a "
                   "bitmask + non-zero values: smaller for element-wise pruned models), export (torch.export "
                   "model.pt2), compile (AOTInductor-compiled model_compiled.pt2), onnx (model.onnx, checked in "
                   "onnxruntime); default eager")
    p.set_defaults(func=f"{COMMANDS}:cmd_apply")


def build_parser() -> argparse.ArgumentParser:
    """The ``autoprune`` parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="autoprune",
        description="AutoML structure search for PyTorch: find per-layer channel pruning ratios under a FLOPs, "
        "params or measured-latency budget and export the policy with the physically smaller model.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every trial")
    parser.add_argument("--version", action="version", version=f"autoprune {version('autoprune')}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_search_command(sub)
    _add_sensitivity_command(sub)
    _add_demo_command(sub)
    _add_report_command(sub)
    _add_train_command(sub)
    _add_apply_command(sub)
    _add_sparsity_command(sub)
    _add_service_commands(sub)
    return parser
