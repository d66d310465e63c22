"""The ``autoprune`` command line: search, sensitivity, demo, report, train, apply; serve, submit, runs."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
import yaml
from rich.console import Console
from rich.table import Table
from rich.text import Text

from agents.sensitivity import sensitivity
from autoprune.builtins.data import DataBundle, load_dataset
from autoprune.builtins.models import build_model
from autoprune.builtins.registry import SEARCHERS
from autoprune.composition.config import SearchConfig, demo_config, load_model_and_data, run_search
from autoprune.composition.search import SearchResult
from autoprune.evaluation.evaluator import EvaluatorConfig, finetune, recalibrate_batchnorm, validate
from autoprune.evaluation.rungs import SchedulerConfig
from autoprune.evaluation.training import TrainConfig, load_checkpoint, trained_model
from autoprune.executors import RayOptions
from autoprune.final.summary import Summary
from autoprune.prune.channels import prune
from autoprune.prune.export import export_model
from autoprune.prune.masks import make_permanent
from autoprune.prune.sparse_format import export_sizes
from autoprune.report.run_record import write_report
from autoprune.report.sparsity_tables import load_state, sparsity_report
from autoprune.service.client import Client
from autoprune.service.server import ServeOptions, serve
from autoprune.study.progress import SearchDisplay
from autoprune.study.rundir import CONFIG, NEW_DIR_HINT, REPORT, RunDir, check_can_start
from autoprune.trial import EvaluationError
from search_spaces import SearchSpace, default_preset
from search_spaces.budget import Budget
from search_spaces.ground.errors import AutopruneError, ConfigError, RunDirError
from search_spaces.ground.inputs import shapes
from search_spaces.ground.io import atomic_write_text
from search_spaces.ground.options import check_int, check_number
from search_spaces.measure import count_flops, count_params
from search_spaces.policy import Policy
from search_spaces.surgery import architecture_name


def _console(*, stderr: bool = False) -> Console:
    """A rich console whose lines are never hard-wrapped when it does not write to a terminal (a log file, a
    pipe, a notebook's captured output): tables get a wide page instead of 80 columns."""
    stream = sys.stderr if stderr else sys.stdout
    wide = None if stream.isatty() or "COLUMNS" in os.environ else _LOG_WIDTH
    return Console(stderr=stderr, soft_wrap=wide is not None, width=wide)


_LOG_WIDTH = 200
console = _console(stderr=True)
out = _console()

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
    ("--round-to", {"type": int, "help": "keep channel counts at multiples of this (e.g. 8)"}),
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
    return keywords.get("dest", flag.lstrip("-").replace("-", "_"))


def _add_overrides(parser: argparse.ArgumentParser, flags: tuple[tuple[str, dict[str, Any]], ...]) -> None:
    group = parser.add_argument_group("overrides (take precedence over the config file)")
    for flag, keywords in flags:
        group.add_argument(flag, **keywords)


def _add_search_overrides(parser: argparse.ArgumentParser) -> None:
    _add_overrides(parser, _SEARCH_FLAGS)
    where = parser.add_argument_group("where evaluations run (may change on --resume)")
    for flag, keywords in _EXECUTOR_FLAGS:
        where.add_argument(flag, **keywords)


def _with_executor_flags(config: SearchConfig, args: argparse.Namespace) -> SearchConfig:
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
               "threads": 1 if args.latency_threads is None else args.latency_threads}
    latency_flags = args.latency_batch is not None or args.latency_threads is not None
    if latency_flags and args.budget_latency is None and args.budget_latency_ms is None:
        raise ConfigError("--latency-batch and --latency-threads need --budget-latency or --budget-latency-ms")
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


def _config_from_args(args: argparse.Namespace) -> SearchConfig:
    config = SearchConfig.from_yaml(args.config) if getattr(args, "config", None) else SearchConfig()
    options = dict(config.searcher_options)
    for item in args.searcher_option or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--searcher-option expects KEY=VALUE, got {item!r}")
        options[key] = yaml.safe_load(value)
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
        final_schedule=args.final_schedule, final_recovery=args.final_recovery,
        train=None if args.epochs is None else replace(config.train, epochs=args.epochs),
    )
    return _with_executor_flags(config, args)


class _Interrupted(Exception):
    """Ctrl+C during a search whose run directory is known (for the resume hint)."""

    def __init__(self, run_dir: str) -> None:
        super().__init__(run_dir)
        self.run_dir = run_dir


def _run(config: SearchConfig, *, resume: bool) -> SearchResult:
    config = replace(config, run_dir=config.run_dir or config.default_run_dir())
    try:
        with SearchDisplay(console) as display:
            return run_search(config, resume=resume, progress=display, on_epoch=display.training(config.train.epochs))
    except KeyboardInterrupt:
        raise _Interrupted(config.run_dir) from None


def _report(result: SearchResult) -> None:
    element = result.space.granularity == "element"
    title = "sparsity per weight tensor" if element else "fraction of channels removed per group"
    policy = Table(title=f"best policy ({title})")
    for column, justify in (("layer" if element else "group", "left"), ("weights" if element else "channels", "right"),
                            ("ratio", "right"), ("kept", "right")):
        policy.add_column(column, justify=justify)
    for group in result.space:
        ratio = result.best_policy[group.name]
        policy.add_row(group.name, str(group.channels), f"{ratio:.3f}", str(group.kept_channels(ratio)))
    out.print(policy)
    s = result.summary
    table = Table(title="baseline vs pruned (test set)")
    for col in ("", "accuracy", "MFLOPs", "params", "CPU latency (ms)"):
        table.add_column(col, justify="right")
    for name, row in (("baseline", s.baseline), ("pruned", s.pruned)):
        latency = "-" if row.latency_ms is None else f"{row.latency_ms:.3f}"
        table.add_row(name, f"{row.accuracy:.4f}", f"{row.flops / 1e6:.3f}", f"{row.params:,}", latency)
    out.print(table)
    line = f"FLOPs kept: {s.flops_ratio:.1%}  params kept: {s.params_ratio:.1%}"
    if element and s.nonzeros_ratio is not None:
        line += f"  non-zeros kept: {s.nonzeros_ratio:.1%} (dense kernels still multiply the zeros: no faster)"
    if s.latency_speedup is not None and s.latency_setting is not None:
        where = s.latency_setting
        line += f"  latency speedup: {s.latency_speedup:.2f}x ({where.threads} thread(s), batch {where.batch})"
    out.print(line)
    for name, reason in s.excluded.items():
        out.print(f"[yellow]excluded group {name}[/yellow]: {reason}")
    if result.run_dir is not None:
        out.print(f"run directory: {result.run_dir}", soft_wrap=True, highlight=False)
        out.print(f"report: {result.run_dir / REPORT}", soft_wrap=True, highlight=False)
    if s.latency_check is not None:
        out.print(_latency_verdict(s), highlight=False, soft_wrap=True)


def _latency_verdict(summary: Summary) -> str:
    """Whether the exported model met a latency budget, as measured at the end."""
    check, budget = summary.latency_check, summary.budget
    if check.measured_ratio is not None and budget.fraction is not None:
        detail = f"measured {check.measured_ratio:.1%} of the unpruned model's latency, budget {budget.fraction:.0%}"
    else:
        detail = f"measured {check.measured_ms:.3f} ms, budget {budget.absolute:.3f} ms"
    repairs = f"; pruned further {check.repairs} time(s) to get there" if check.repairs else ""
    return f"latency budget {'met' if check.met else 'NOT met'}: {detail}{repairs}"


def _resume_config(args: argparse.Namespace) -> SearchConfig:
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
    config = _with_executor_flags(config, args)  # --executor local drops a saved cluster: nothing left to trust
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


def cmd_search(args: argparse.Namespace) -> int:
    config = _resume_config(args) if args.resume is not None else _config_from_args(args)
    _report(_run(config, resume=args.resume is not None))
    return 0


def cmd_sensitivity(args: argparse.Namespace) -> int:
    config = _config_from_args(args)
    try:
        levels = [float(v) for v in args.levels.split(",")] if args.levels else None
    except ValueError:
        raise ConfigError(f"--levels expects comma-separated fractions like 0.25,0.5,1, got {args.levels!r}") from None
    run_dir = args.run_dir or config.run_dir or str(
        Path("runs") / f"{config.model}-{config.dataset}-sensitivity-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    check_can_start(run_dir, resume=False, hint=NEW_DIR_HINT)  # before the baseline is loaded or trained
    with SearchDisplay(console) as display:
        model, data, _ = load_model_and_data(config, on_epoch=display.training(config.train.epochs))
        inputs = data.example_inputs()
        space = SearchSpace.from_model(model, inputs, preset=config.preset or default_preset(config.model),
                                       ignore=config.ignore, round_to=config.round_to, max_ratio=config.max_ratio)
        result = sensitivity(
            model, inputs, train_data=data.train, val_data=data.val, evaluator=config.evaluator, space=space,
            run_dir=run_dir, progress=lambda done, total: display.show("sensitivity scan", done, total, ""),
            **({"levels": levels} if levels else {}),
        )
    pivot = result.table.pivot(index="group", columns="ratio", values="accuracy")
    table = Table(title=f"validation accuracy with one group pruned (unpruned: {result.baseline_accuracy:.4f})")
    table.add_column("group")
    table.add_column("ratios -> accuracy")
    for group in space.names:
        row = pivot.loc[group].dropna()
        table.add_row(group, "  ".join(f"{r:.2f}:{a:.3f}" for r, a in row.items()))
    out.print(table)
    out.print(f"table: {result.table_path}\nplot: {result.plot_path}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    config = demo_config(trials=args.trials, run_dir=args.run_dir, seed=args.seed)
    out.print(f"autoprune demo: {config.model} on {config.dataset}, {config.searcher} search, "
              f"{config.trials} trials, budget {config.budget}")
    _report(_run(config, resume=False))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    path = write_report(args.run_dir, args.out)
    out.print(f"report: {path}", soft_wrap=True, highlight=False)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    recipe = TrainConfig(epochs=args.epochs, lr=args.lr, seed=args.seed)  # checks the flags before any work
    data = load_dataset(args.dataset, batch_size=args.batch_size, seed=args.seed, data_dir=args.data_dir)
    model = build_model(args.model, in_channels=data.in_channels, num_classes=data.num_classes, seed=args.seed)
    with SearchDisplay(console) as display:
        model, path, trained = trained_model(args.model, model, data, recipe, retrain=args.retrain,
                                             on_epoch=display.training(args.epochs))
    accuracy, _ = validate(model, data.test)
    out.print(f"{'trained' if trained else 'cached'} checkpoint: {path}")
    out.print(f"test accuracy: {accuracy:.4f}")
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    if args.finetune_steps is not None:
        check_int("--finetune-steps", args.finetune_steps, low=0)
    if args.lr is not None:
        check_number("--lr", args.lr, low=0, inclusive=False)
    policy = Policy.load(args.policy)
    data = load_dataset(args.dataset, data_dir=args.data_dir)
    model = build_model(args.model, in_channels=data.in_channels, num_classes=data.num_classes)
    load_checkpoint(model, args.checkpoint, name=f"model {args.model!r}")
    inputs = data.example_inputs()
    result = prune(model, policy, inputs, importance=args.importance, data=data.train)
    if args.finetune_steps is not None:
        _recover_and_compare(model, result.model, data, args)
    make_permanent(result.model)  # an element policy's masks become plain zeros
    written = export_model(result.model, inputs, args.out, [f.strip() for f in args.format.split(",")],
                           history=result.history,
                           meta={"architecture": architecture_name(model), "input_shape": shapes(inputs),
                                 "policy": str(Path(args.policy).resolve())})
    base_flops, flops = count_flops(model, inputs), count_flops(result.model, inputs)
    for name, info in written.items():
        check = "" if "max_abs_diff" not in info else f" (outputs match eager, max |diff| {info['max_abs_diff']:.1e})"
        if "sizes" in info:
            check = (f" (reloads bit for bit; gzip {info['sizes']['sparse_gzip_bytes']:,} B vs dense "
                     f"{info['sizes']['dense_gzip_bytes']:,} B)")
        out.print(f"{name}: {info['path']}{check}")
    out.print(f"FLOPs {base_flops:,} -> {flops:,} ({flops / base_flops:.1%}); "
              f"params {count_params(model):,} -> {count_params(result.model):,}")
    return 0


def _recover_and_compare(model: torch.nn.Module, pruned: torch.nn.Module, data: DataBundle,
                         args: argparse.Namespace) -> None:
    """BatchNorm recalibration and ``--finetune-steps`` of SGD for the pruned model, then both models' test
    accuracy."""
    recipe = EvaluatorConfig()
    recalibrate_batchnorm(pruned, data.train, recipe.bn_batches)
    finetune(pruned, data.train, steps=args.finetune_steps, lr=recipe.lr if args.lr is None else args.lr,
             weight_decay=recipe.weight_decay)
    (base_accuracy, _), (accuracy, _) = validate(model.eval(), data.test), validate(pruned.eval(), data.test)
    out.print(f"test accuracy: baseline {base_accuracy:.4f} -> pruned {accuracy:.4f} "
              f"(BatchNorm recalibrated, {args.finetune_steps} finetune steps)")


def cmd_sparsity(args: argparse.Namespace) -> int:
    state = load_state(args.checkpoint)
    report = sparsity_report(state)
    if args.csv:
        atomic_write_text(Path(args.csv), report.to_csv(index=False))
    table = Table(title=f"sparsity of {args.checkpoint}")
    for col in ("tensor", "shape", "numel", "non-zeros", "density", "sparsity", "share"):
        table.add_column(col, justify="left" if col == "tensor" else "right")
    for row in report.itertuples(index=False):
        table.add_row(row.tensor, row.shape, f"{row.numel:,}", f"{row.nonzeros:,}", f"{row.density:.1%}",
                      f"{row.sparsity:.1%}", f"{row.share:.1%}")
    out.print(table)
    sizes = export_sizes(state)
    out.print(f"on disk: dense {sizes['dense_bytes']:,} B (gzip {sizes['dense_gzip_bytes']:,} B); sparse form "
              f"{sizes['sparse_bytes']:,} B (gzip {sizes['sparse_gzip_bytes']:,} B)", highlight=False)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    options = ServeOptions(host=args.host, port=args.port, runs_root=args.runs_root, ray_address=args.ray_address,
                           max_concurrent=args.max_concurrent, allow_imports=args.allow_imports)
    serve(options, announce=lambda line: console.print(Text(line), highlight=False, soft_wrap=True))
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    with Client(args.server) as client:
        run = client.submit(args.config)
        out.print(run.id)
        if args.wait:
            status = run.wait()
            out.print(f"{run.id}: {status}")
            return 0 if status == "done" else 1
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    with Client(args.server) as client:
        if args.action == "list":
            table = Table(title=f"runs on {args.server}")
            for column in ("id", "status", "progress", "best acc", "budget", "searcher", "created", "owner"):
                table.add_column(column)
            for run in client.runs():
                done, best = run["progress"], run["progress"]["best_accuracy"]
                table.add_row(run["id"], run["status"], f"{done['completed']}/{done['total']}",
                              "-" if best is None else f"{best:.4f}", _budget_text(run["budget"]), run["searcher"],
                              run["created"], run["owner"])
            out.print(table)
            return 0
        if args.id is None:
            raise ConfigError(f"autoprune runs {args.action} needs a run id")
        run = client.run(args.id)
        if args.action == "show":
            out.print_json(data=run.info())
        elif args.action == "cancel":
            out.print(f"{run.id}: {run.cancel()}")
        else:
            out.print(f"{run.id}: {run.resume(trials=args.trials)}")
    return 0


def _budget_text(budget: Any) -> str:
    """A budget as a reader would say it ("flops <= 50% of the unpruned model"), not as a mapping."""
    return str(Budget.from_dict(budget)) if isinstance(budget, dict) else str(budget)


def _add_service_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve searches over HTTP (queue, auth, restart safety); docs/service.md",
                       description="An HTTP/JSON API (OpenAPI docs at /docs) that runs submitted searches, each as a "
                       "driver process, at most --max-concurrent at once. Needs a bearer token: AUTOPRUNE_TOKEN, or "
                       "one created on the first start in RUNS_ROOT/.token and printed once.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; any other needs a token)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0: any free port)")
    p.add_argument("--runs-root", default="runs", help="directory of the run directories (default runs)")
    p.add_argument("--ray-address", help="Ray cluster for runs with executor ray, e.g. auto (ray_cluster.yaml); "
                   "default: each such run starts an embedded local Ray")
    p.add_argument("--max-concurrent", type=int, default=1, help="searches executing at once; the rest wait in order "
                   "(default 1)")
    p.add_argument("--allow-imports", action="store_true",
                   help="accept package.module:factory strings in submitted configs (they run code on this server)")
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("submit", help="submit a search config to a server",
                       description="Send CONFIG.yaml (the same file autoprune search reads) to a server; prints the "
                       "run id. The token comes from AUTOPRUNE_TOKEN.")
    p.add_argument("config", help="YAML or JSON search config")
    p.add_argument("--server", required=True, help="server URL, e.g. http://127.0.0.1:8765")
    p.add_argument("--wait", action="store_true", help="wait until the run has finished (progress bar)")
    p.set_defaults(func=cmd_submit)
    p = sub.add_parser("runs", help="list, show, cancel or resume runs on a server",
                       description="Runs on a server (token from AUTOPRUNE_TOKEN).")
    p.add_argument("action", nargs="?", default="list", choices=["list", "show", "cancel", "resume"],
                   help="what to do (default list)")
    p.add_argument("id", nargs="?", help="run id (show, cancel, resume)")
    p.add_argument("--server", required=True, help="server URL, e.g. http://127.0.0.1:8765")
    p.add_argument("--trials", type=int, help="resume: the new total of trials")
    p.set_defaults(func=cmd_runs)


def _add_search_command(sub: argparse._SubParsersAction) -> None:
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
    _add_search_overrides(p)
    p.set_defaults(func=cmd_search)


def _add_sensitivity_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sensitivity", help="prune each group alone at several ratios; write a table and a plot",
                       description="Distiller-style sensitivity analysis: the unpruned model and every group "
                       "pruned alone at each level (fraction of its max ratio), scored by the evaluator. "
                       "Writes sensitivity.csv and sensitivity.png to the run directory.")
    p.add_argument("config", nargs="?", help="YAML config (model, dataset, evaluator, space options)")
    p.add_argument("--levels", help="comma-separated fractions of each group's max ratio (default 0.25,0.5,0.75,1)")
    _add_overrides(p, _MODEL_FLAGS)
    p.set_defaults(**{_dest(flag, keywords): None for flag, keywords in _SEARCH_ONLY_FLAGS + _EXECUTOR_FLAGS})
    p.set_defaults(func=cmd_sensitivity)


def _add_demo_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train a small CNN on digits (cached) and search at 50%% FLOPs",
                       description="The quickstart: small CNN on scikit-learn's digits, random search at 50% FLOPs, "
                       "then the best policy is finetuned and compared with the baseline.")
    p.add_argument("--trials", type=int, help="evaluations (default 40)")
    p.add_argument("--seed", type=int, help="seed (default 0)")
    p.add_argument("--run-dir", help="output directory (default runs/small_cnn-digits-<time>)")
    p.set_defaults(func=cmd_demo)


def _add_report_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write RUN_DIR/report.html, one self-contained page about a run",
                       description="Draw a run directory's files (trials, summary, best policy, sensitivity scan, "
                       "config) into one HTML page that opens offline. Works on a finished run and on one still "
                       "in progress (it shows what exists). Every search writes it at the end too.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run directory of a search")
    p.add_argument("--out", help="where to write the page (default RUN_DIR/report.html)")
    p.set_defaults(func=cmd_report)


def _add_train_command(sub: argparse._SubParsersAction) -> None:
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
    p.set_defaults(func=cmd_train)


def _add_sparsity_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sparsity", help="per-tensor sparsity and size on disk of a checkpoint",
                       description="Read a state dict (a .pt file, an exported model directory in the dense or "
                       "sparse form, or a run directory) and print, per weight tensor, its shape, non-zeros, "
                       "density, sparsity and share of the model, with totals, and the measured size of the dense "
                       "and sparse forms, raw and gzip-compressed.")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a .pt state dict, a model directory or a run directory")
    p.add_argument("--csv", help="also write the table to this CSV file")
    p.set_defaults(func=cmd_sparsity)


def _add_apply_command(sub: argparse._SubParsersAction) -> None:
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
    p.set_defaults(func=cmd_apply)


def build_parser() -> argparse.ArgumentParser:
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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    try:
        return args.func(args)
    except (AutopruneError, EvaluationError) as exc:  # bad input; a finetune that diverged (e.g. --lr too high)
        # the message literally (a value in it is never read as markup), on one line (no hard breaks)
        console.print(Text("error: ", style="red") + Text(str(exc)), highlight=False, soft_wrap=True)
        return 2
    except _Interrupted as stop:
        written = (Path(stop.run_dir) / CONFIG).exists()
        hint = f"resume with: autoprune search --resume {shlex.quote(stop.run_dir)}" if written else \
            "nothing was written to resume"
        console.print(Text(f"interrupted; {hint}"), highlight=False, soft_wrap=True)
        return 130
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130

