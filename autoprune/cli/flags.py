"""The CLI's flags: the override tables, a SearchConfig from parsed flags, and the config of a resumed run (with
its trust checks)."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

from autoprune.builtins.registry import SEARCHERS
from autoprune.composition.config import SearchConfig
from autoprune.evaluation.evaluator import EvaluatorConfig
from autoprune.evaluation.rungs import SchedulerConfig
from autoprune.executors import RayOptions
from autoprune.study.rundir import RunDir
from search_spaces.budget import Budget
from search_spaces.ground.documents import loads_yaml
from search_spaces.ground.errors import ConfigError, RunDirError
from search_spaces.runtimes import RUNTIMES


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
# Settings only a search has. ``--resume`` accepts only those in _RESUME_FLAGS (and the executor flags).
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
    ("--scheduler", {"choices": ["none", "asha"],
                     "help": "multi-fidelity: asha stops poor candidates at early finetune rungs (either executor; "
                     "needs --finetune-steps)"}),
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
                         "one more forward pass per step)"}),
    ("--time-budget", {"metavar": "DURATION",
                       "help": "wall-clock limit on the trials, e.g. 2h, 90m, 1h30m or seconds: no trial starts "
                       "after it, the best so far is finalized, and --resume continues"}),
    ("--tracking", {"metavar": "NAMES", "help": "experiment tracking, comma-separated: tensorboard, mlflow "
                    "(written under the run directory)"}),
)
_SEARCH_FLAGS = _MODEL_FLAGS + _SEARCH_ONLY_FLAGS
_RESUME_FLAGS = ("--trials", "--time-budget", "--tracking")
# Where evaluations run: may change on --resume. Every flag but --executor is a Ray executor option.
_EXECUTOR_FLAGS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("--executor", {"choices": ["local", "ray"], "help": "in this process (local) or as Ray Tune trials"}),
    ("--address", {"help": "Ray cluster to join: auto or ray://host:10001 (default: start a local Ray)"}),
    ("--cpus-per-trial", {"type": float, "help": "CPUs per Ray trial (default 1)"}),
    ("--gpus-per-trial", {"type": float, "help": "GPUs per Ray trial (default 0)"}),
    ("--max-concurrent", {"type": int, "help": "cap on Ray trials running at once"}),
)


def _dest(flag: str, keywords: dict[str, Any]) -> str:
    """The argparse attribute a flag is stored in."""
    return keywords.get("dest", flag.lstrip("-").replace("-", "_"))


def add_model_overrides(parser: argparse.ArgumentParser) -> None:
    """The model, data and evaluator overrides (sensitivity); the search-only settings default to None."""
    _add_overrides(parser, _MODEL_FLAGS, helps={"--run-dir": "output directory (a new or empty one; a scan is not "
                                                              "resumed)"})
    parser.set_defaults(**{_dest(flag, keywords): None for flag, keywords in _SEARCH_ONLY_FLAGS + _EXECUTOR_FLAGS})


def _add_overrides(parser: argparse.ArgumentParser, flags: tuple[tuple[str, dict[str, Any]], ...], *,
                   helps: dict[str, str] | None = None) -> None:
    """``flags`` as one argument group of overrides (``helps``: this command's own help text of some flags)."""
    group = parser.add_argument_group("overrides (take precedence over the config file)")
    for flag, keywords in flags:
        group.add_argument(flag, **{**keywords, **({"help": helps[flag]} if helps and flag in helps else {})})


def add_search_overrides(parser: argparse.ArgumentParser) -> None:
    """Every search setting a flag may override, and where evaluations run."""
    _add_overrides(parser, _SEARCH_FLAGS)
    where = parser.add_argument_group("where evaluations run (may change on --resume)")
    for flag, keywords in _EXECUTOR_FLAGS:
        where.add_argument(flag, **keywords)


def with_executor_flags(config: SearchConfig, args: argparse.Namespace) -> SearchConfig:
    """Apply the executor flags; Ray options switch a local run to Ray, ``--executor local`` drops them."""
    given = {_dest(f, k): getattr(args, _dest(f, k), None) for f, k in _EXECUTOR_FLAGS[1:]}
    given = {k: v for k, v in given.items() if v is not None}
    executor = args.executor or ("ray" if given and config.executor == "local" else config.executor)
    if executor == "local":
        return replace(config, executor="local", executor_options=None)
    options = replace(config.executor_options or RayOptions(), **given)
    return replace(config, executor=executor, executor_options=options)


def _tracking(args: argparse.Namespace) -> list[str] | None:
    """``--tracking a,b`` as a list (None: not given)."""
    return None if args.tracking is None else [name.strip() for name in args.tracking.split(",") if name.strip()]


def _budget_from_args(args: argparse.Namespace) -> Budget | None:
    """The budget the flags ask for (None: keep the config's)."""
    given = {flag: value for flag, value in (
        ("--budget-flops", args.budget_flops), ("--budget-params", args.budget_params),
        ("--budget-nonzeros", args.budget_nonzeros), ("--budget-latency", args.budget_latency),
        ("--budget-latency-ms", args.budget_latency_ms),
    ) if value is not None}
    if len(given) > 1:
        raise ConfigError(f"give only one budget, got {', '.join(given)}")
    setting = {"batch": 1 if args.latency_batch is None else args.latency_batch,
               "threads": 1 if args.latency_threads is None else args.latency_threads,
               "runtime": args.latency_runtime or "eager"}
    latency_flags = any(v is not None for v in (args.latency_batch, args.latency_threads, args.latency_runtime))
    if latency_flags and args.budget_latency is None and args.budget_latency_ms is None:
        raise ConfigError("--latency-batch, --latency-threads and --latency-runtime need --budget-latency or "
                          "--budget-latency-ms")
    if args.budget_flops is not None:
        return Budget.flops(args.budget_flops)
    if args.budget_params is not None:
        return Budget.params(args.budget_params)
    if args.budget_nonzeros is not None:
        return Budget.nonzeros(args.budget_nonzeros)
    if args.budget_latency is not None:
        return Budget.latency(args.budget_latency, **setting)
    if args.budget_latency_ms is not None:
        return Budget.latency(ms=args.budget_latency_ms, **setting)
    return None


def config_from_args(args: argparse.Namespace) -> SearchConfig:
    """The config file (if given) with every override flag applied."""
    config = SearchConfig.from_yaml(args.config) if getattr(args, "config", None) else SearchConfig()
    options = dict(config.searcher_options)
    for item in args.searcher_option or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--searcher-option expects KEY=VALUE, got {item!r}")
        options[key] = loads_yaml(value, what=f"--searcher-option {key!r}")
    recipe = {key: getattr(args, key) for key in ("finetune_steps", "bn_batches", "importance")
              if getattr(args, key) is not None}
    config = config.with_overrides(
        model=args.model, dataset=args.dataset, data_dir=args.data_dir, checkpoint=args.checkpoint,
        budget=_budget_from_args(args), searcher=args.searcher, searcher_options=options, trials=args.trials,
        seed=args.seed, evaluator=EvaluatorConfig.from_dict({**config.evaluator.to_dict(), **recipe}),
        final_finetune_steps=args.final_finetune_steps, run_dir=args.run_dir, round_to=args.round_to,
        scheduler=None if args.scheduler is None else SchedulerConfig(kind=args.scheduler),
        rescore=None if args.rescore_top is None else replace(config.rescore, top_k=args.rescore_top),
        time_budget=args.time_budget, tracking=_tracking(args), granularity=args.granularity,
        export=None if args.format is None else [f.strip() for f in args.format.split(",") if f.strip()],
        final_schedule=args.final_schedule, final_recovery=args.final_recovery, final_distill=args.final_distill,
        train=None if args.epochs is None else replace(config.train, epochs=args.epochs),
    )
    return with_executor_flags(config, args)


def resume_config(args: argparse.Namespace) -> SearchConfig:
    """The saved config of the run in ``--resume``, with the flags a resume may change; checked for trust."""
    others = [flag for flag, keywords in _SEARCH_FLAGS
              if flag not in _RESUME_FLAGS and getattr(args, _dest(flag, keywords)) is not None]
    if args.config or others:
        given = [args.config] if args.config else []
        raise ConfigError(
            f"--resume continues a run with its saved settings; only {', '.join(_RESUME_FLAGS)} and where evaluations "
            f"run may change (got {given + others})"
        )
    if not Path(args.resume).is_dir():
        raise RunDirError(f"--resume {args.resume!r}: no such directory; not an autoprune run directory")
    stored = RunDir(args.resume).read_config().get("config")
    if not isinstance(stored, dict):
        raise RunDirError(
            f"{args.resume!r} was started from Python, not the CLI; resume it with search(..., resume=True)"
        )
    source = str(Path(args.resume) / "config.json")
    config = SearchConfig.from_dict(stored, source=source).with_overrides(
        trials=args.trials, run_dir=args.resume, time_budget=args.time_budget, tracking=_tracking(args))
    config = with_executor_flags(config, args)  # --executor local drops a saved cluster: nothing left to trust
    _check_trusted(config, args, source)
    return config


def _check_trusted(config: SearchConfig, args: argparse.Namespace, source: str) -> None:
    """A run directory may come from anyone: its import strings (code), Ray address (where results come from),
    Ray dashboard (its jobs API runs code) and storage path (where Ray writes) are used only when the user says
    so (``--trust-run-dir``, or ``--address`` given again). ``config`` has the command's executor flags applied."""
    if args.trust_run_dir:
        return
    imports = [f"{k} {getattr(config, k)!r}" for k in ("model", "dataset", "searcher") if ":" in getattr(config, k)]
    if imports:
        raise RunDirError(f"{source} names import strings ({', '.join(imports)}): resuming would run their code; "
                          "pass --trust-run-dir if you trust this run directory")
    options = config.executor_options
    if options is None:
        return
    if options.address is not None and args.address is None:
        raise RunDirError(f"{source} names the Ray cluster {options.address!r}; pass --address {options.address} "
                          "again (or --trust-run-dir) to resume there, or --executor local to resume here")
    saved = [f"{name}={getattr(options, name)!r}" for name in ("dashboard", "dashboard_host", "storage_path")
             if getattr(options, name) != getattr(RayOptions(), name)]
    if saved:
        raise RunDirError(f"{source} sets Ray's {', '.join(saved)}: Ray's dashboard serves a jobs API that runs "
                          "code, and a storage path writes where it names; pass --trust-run-dir if you trust this "
                          "run directory")
