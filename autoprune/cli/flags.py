"""The CLI's override flags: their tables and the argument groups they form (light: building the parser imports
nothing heavy; autoprune.cli.flag_configs turns parsed flags into a SearchConfig)."""

from __future__ import annotations

import argparse
from typing import Any

from autoprune.builtins.registry import SEARCHERS
from search_spaces.runtime_names import RUNTIMES


def _round_to(value: str) -> int | str:
    """``--round-to``: a positive integer or ``auto``."""
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {value!r}") from None


# Settings a flag may override, shared by search and sensitivity: (flags, argparse keywords).
_MODEL_FLAGS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("--model", {"help": "built-in model (small_cnn, resnet20, resnet56, mobilenet_v2, resnet18) "
                 "or package.module:factory(in_channels=, num_classes=)"}),
    ("--dataset", {"help": "digits (embedded), fashion-mnist (local IDX files), cifar10 (downloads), or "
                   "package.module:factory returning a DataBundle"}),
    ("--data-dir", {"help": "dataset directory (fashion-mnist default: /usr/share/datasets/fashion-mnist from the "
                    "Debian package dataset-fashion-mnist)"}),
    ("--checkpoint", {"help": "trained weights (state dict); default: train the baseline and cache it"}),
    ("--seed", {"type": int, "help": "seed for the searcher, data order and evaluations"}),
    ("--epochs", {"type": int, "help": "baseline training epochs when there is no --checkpoint (default: the "
                  "config's train.epochs, 30); each recipe's checkpoint is cached separately"}),
    ("--finetune-steps", {"type": int, "help": "finetune steps per candidate (evaluator fidelity)"}),
    ("--bn-batches", {"type": int, "help": "batches for BatchNorm recalibration per candidate"}),
    ("--importance", {"help": "channel importance: l1, l2, bn_scale, taylor, random"}),
    ("--round-to", {"type": _round_to, "help": "keep channel counts at multiples of this (e.g. 8), or auto: the "
                    "multiple measured from latency staircases in the runtimes the model will run in"}),
    ("--run-dir", {"help": "output directory (must be empty unless --resume)"}),
)
# Settings only a search has. ``--resume`` accepts only those in RESUME_FLAGS (and the executor flags).
_SEARCH_ONLY_FLAGS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("--budget-flops", {"type": float, "metavar": "FRACTION",
                        "help": "keep at most this fraction of the unpruned model's FLOPs, e.g. 0.5"}),
    ("--budget-params", {"type": float, "metavar": "FRACTION",
                         "help": "keep at most this fraction of the unpruned model's parameters"}),
    ("--budget-nonzeros", {"type": float, "metavar": "FRACTION",
                           "help": "at most this fraction of the unpruned model's parameters non-zero (with "
                           "--granularity element)"}),
    ("--budget-latency", {"type": float, "metavar": "FRACTION",
                          "help": "at most this fraction of the unpruned model's measured latency (see --latency-*)"}),
    ("--budget-latency-ms", {"type": float, "metavar": "MS",
                             "help": "at most this many milliseconds of measured latency (see --latency-*)"}),
    ("--latency-batch", {"type": int, "help": "batch size latency is measured at (default 1)"}),
    ("--latency-threads", {"type": int, "help": "CPU threads latency is measured with (default 1)"}),
    ("--latency-runtime", {"choices": list(RUNTIMES),
                           "help": "where latency is measured: eager (default), compiled (torch.compile), aoti "
                           "(AOTInductor, the compile export) or onnxruntime (the onnx export)"}),
    ("--format", {"metavar": "FORMATS",
                  "help": "comma-separated forms the final model is written in: eager (default), export, compile, "
                  "onnx; each is timed against the unpruned model in its runtime"}),
    ("--searcher", {"help": f"searcher name ({', '.join(sorted(SEARCHERS))}) or package.module:Class"}),
    ("--searcher-option", {"action": "append", "metavar": "KEY=VALUE", "dest": "searcher_option",
                           "help": "a searcher option (value parsed as YAML), e.g. sampler=cmaes; repeatable"}),
    ("--trials", {"type": int, "help": "number of evaluations"}),
    ("--scheduler", {"choices": ["none", "asha", "cascade"],
                     "help": "multi-fidelity (either executor; needs --finetune-steps): asha stops poor candidates "
                     "at early finetune rungs; cascade screens every candidate by its adaptive-BN score and "
                     "finetunes the best quarter"}),
    ("--rescore-top", {"type": int, "metavar": "K",
                       "help": "re-score the best K candidates at 3x the finetune steps (30 after adaptive-BN "
                       "scoring) before exporting (default 3; 0: off)"}),
    ("--final-finetune-steps", {"type": int, "help": "finetune steps for the best policy at the end"}),
    ("--granularity", {"choices": ["channel", "element"],
                       "help": "channel (structured, default) or element (one sparsity per weight tensor)"}),
    ("--final-schedule", {"choices": ["one_shot", "iterative", "agp", "constant"],
                          "help": "how the best policy is reached in the final step (default one_shot; a gradual "
                          "one trains --final-finetune-steps while it prunes)"}),
    ("--final-recovery", {"choices": ["finetune", "lr_rewind", "weight_rewind", "scratch"],
                          "help": "after one-shot pruning: finetune (default), learning-rate rewinding, weight "
                          "rewinding (config's rewind_checkpoint) or training from scratch"}),
    ("--final-distill", {"action": argparse.BooleanOptionalAction, "default": None,
                         "help": "the final training distills from the unpruned model (knowledge distillation; "
                         "one more forward pass per step; default on, --no-final-distill: plain finetuning)"}),
    ("--time-budget", {"metavar": "DURATION",
                       "help": "wall-clock limit on the trials, e.g. 2h, 90m, 1h30m or seconds: no trial starts "
                       "after it, the best so far is finalized, and --resume continues"}),
    ("--tracking", {"metavar": "NAMES", "help": "experiment tracking, comma-separated: tensorboard, mlflow "
                    "(written under the run directory)"}),
)
SEARCH_FLAGS = _MODEL_FLAGS + _SEARCH_ONLY_FLAGS
RESUME_FLAGS = ("--trials", "--time-budget", "--tracking")
# Where evaluations run: may change on --resume. Every flag but --executor is a Ray executor option.
EXECUTOR_FLAGS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("--executor", {"choices": ["local", "ray"], "help": "in this process (local) or as Ray Tune trials"}),
    ("--address", {"help": "Ray cluster to join: auto or ray://host:10001 (default: start a local Ray)"}),
    ("--cpus-per-trial", {"type": float, "help": "CPUs per Ray trial (default 1)"}),
    ("--gpus-per-trial", {"type": float, "help": "GPUs per Ray trial (default 0)"}),
    ("--max-concurrent", {"type": int, "help": "cap on Ray trials running at once"}),
)


def dest(flag: str, keywords: dict[str, Any]) -> str:
    """The argparse attribute a flag is stored in."""
    return keywords.get("dest", flag.lstrip("-").replace("-", "_"))


def add_model_overrides(parser: argparse.ArgumentParser) -> None:
    """The model, data and evaluator overrides (sensitivity); the search-only settings default to None."""
    _add_overrides(parser, _MODEL_FLAGS, helps={"--run-dir": "output directory (a new or empty one; a scan is not "
                                                              "resumed)"})
    parser.set_defaults(**{dest(flag, keywords): None for flag, keywords in _SEARCH_ONLY_FLAGS + EXECUTOR_FLAGS})


def _add_overrides(parser: argparse.ArgumentParser, flags: tuple[tuple[str, dict[str, Any]], ...], *,
                   helps: dict[str, str] | None = None) -> None:
    """``flags`` as one argument group of overrides (``helps``: this command's own help text of some flags)."""
    group = parser.add_argument_group("overrides (take precedence over the config file)")
    for flag, keywords in flags:
        group.add_argument(flag, **{**keywords, **({"help": helps[flag]} if helps and flag in helps else {})})


def add_search_overrides(parser: argparse.ArgumentParser) -> None:
    """Every search setting a flag may override, and where evaluations run."""
    _add_overrides(parser, SEARCH_FLAGS)
    where = parser.add_argument_group("where evaluations run (may change on --resume)")
    for flag, keywords in EXECUTOR_FLAGS:
        where.add_argument(flag, **keywords)
