"""The local commands: search, sensitivity, demo, report, train, apply, sparsity."""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from agents.sensitivity import sensitivity
from autoprune.builtins.data import load_dataset
from autoprune.builtins.models import build_model
from autoprune.cli.console import console, out, print_line
from autoprune.cli.flag_configs import config_from_args, resume_config
from autoprune.cli.render import (
    report_export,
    report_recovery,
    report_search,
    report_sensitivity,
    report_sizes,
    report_sparsity,
)
from autoprune.cli.stops import MACHINE_ERRNOS, Interrupted, MachineStopped
from autoprune.composition.config import SearchConfig, demo_config, load_model_and_data, run_search
from autoprune.composition.search import SearchResult
from autoprune.evaluation.evaluator import validate
from autoprune.evaluation.training import TrainConfig, load_checkpoint, trained_model
from autoprune.final.apply import apply_and_recover, export_applied
from autoprune.prune.sparse_format import export_sizes
from autoprune.report.run_record import write_report
from autoprune.report.sparsity_tables import load_state, sparsity_report
from autoprune.study.progress import SearchDisplay
from autoprune.study.rundir import CONFIG, NEW_DIR_HINT, check_can_start
from search_spaces import SearchSpace, default_preset
from search_spaces.ground.errors import ConfigError
from search_spaces.ground.io import atomic_write_text
from search_spaces.ground.options import check_int, check_number
from search_spaces.policy import Policy


def _run(config: SearchConfig, *, resume: bool) -> SearchResult:
    """The search of ``config`` with a progress display; Ctrl+C becomes :class:`Interrupted`, a full or read-only
    disk :class:`MachineStopped`."""
    config = replace(config, run_dir=config.run_dir or config.default_run_dir())
    try:
        with SearchDisplay(console) as display:
            return run_search(config, resume=resume, progress=display, on_epoch=display.training(config.train.epochs))
    except KeyboardInterrupt:
        raise Interrupted(config.run_dir, resumable=_resumable(config.run_dir)) from None
    except OSError as exc:
        if exc.errno in MACHINE_ERRNOS:
            raise MachineStopped(config.run_dir, exc, resumable=_resumable(config.run_dir)) from None
        raise


def _resumable(run_dir: str) -> bool:
    return (Path(run_dir) / CONFIG).exists()


def cmd_search(args: argparse.Namespace) -> int:
    """``autoprune search``: a new search, or ``--resume`` of one."""
    config = resume_config(args) if args.resume is not None else config_from_args(args)
    report_search(_run(config, resume=args.resume is not None))
    return 0


def _levels(text: str | None) -> list[float] | None:
    """``--levels`` as fractions (None: not given)."""
    try:
        return [float(v) for v in text.split(",")] if text else None
    except ValueError:
        raise ConfigError(f"--levels expects comma-separated fractions like 0.25,0.5,1, got {text!r}") from None


def cmd_sensitivity(args: argparse.Namespace) -> int:
    """``autoprune sensitivity``: every group pruned alone at several levels; a table and a plot."""
    config = config_from_args(args)
    levels = _levels(args.levels)
    run_dir = args.run_dir or config.run_dir or str(
        Path("runs") / f"{config.model}-{config.dataset}-sensitivity-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    check_can_start(run_dir, resume=False, hint=NEW_DIR_HINT)  # before the baseline is loaded or trained
    if config.round_to == "auto":
        raise ConfigError("round_to auto is measured for a search; a sensitivity scan takes a number (--round-to 8)")
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
    report_sensitivity(result.table, space.names, result.baseline_accuracy)
    print_line(f"table: {result.table_path}", to=out)
    print_line(f"plot: {result.plot_path}", to=out)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """``autoprune demo``: the quickstart search."""
    config = demo_config(trials=args.trials, run_dir=args.run_dir, seed=args.seed)
    print_line(f"autoprune demo: {config.model} on {config.dataset}, {config.searcher} search, "
               f"{config.trials} trials, budget {config.budget}", to=out)
    report_search(_run(config, resume=False))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """``autoprune report``: a run directory's HTML page."""
    path = write_report(args.run_dir, args.out)
    print_line(f"report: {path}", to=out)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """``autoprune train``: a baseline checkpoint, trained or from the cache."""
    recipe = TrainConfig(epochs=args.epochs, lr=args.lr, seed=args.seed)  # checks the flags before any work
    data = load_dataset(args.dataset, batch_size=args.batch_size, seed=args.seed, data_dir=args.data_dir)
    model = build_model(args.model, in_channels=data.in_channels, num_classes=data.num_classes, seed=args.seed)
    with SearchDisplay(console) as display:
        model, path, trained = trained_model(args.model, model, data, recipe, retrain=args.retrain,
                                             on_epoch=display.training(args.epochs),
                                             on_batch=display.batches(args.epochs))
    accuracy, _ = validate(model, data.test)
    print_line(f"{'trained' if trained else 'cached'} checkpoint: {path}", to=out)
    out.print(f"test accuracy: {accuracy:.4f}")
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    """``autoprune apply``: a checkpoint pruned with a saved policy, optionally recovered, then exported."""
    if args.finetune_steps is not None:
        check_int("--finetune-steps", args.finetune_steps, low=0)
    if args.lr is not None:
        check_number("--lr", args.lr, low=0, inclusive=False)
    policy = Policy.load(args.policy)
    data = load_dataset(args.dataset, data_dir=args.data_dir)
    model = build_model(args.model, in_channels=data.in_channels, num_classes=data.num_classes)
    load_checkpoint(model, args.checkpoint, name=f"model {args.model!r}")
    applied = apply_and_recover(model, policy, data, importance=args.importance, finetune_steps=args.finetune_steps,
                                lr=args.lr)
    if applied.recovery is not None:
        report_recovery(applied.recovery)
    formats = [f.strip() for f in args.format.split(",")]
    report_export(export_applied(applied, args.out, formats, policy_path=args.policy))
    return 0


def cmd_sparsity(args: argparse.Namespace) -> int:
    """``autoprune sparsity``: per-tensor sparsity and size on disk of a checkpoint."""
    state = load_state(args.checkpoint)
    report = sparsity_report(state)
    if args.csv:
        atomic_write_text(Path(args.csv), report.to_csv(index=False))
    report_sparsity(args.checkpoint, report)
    report_sizes(export_sizes(state))
    return 0
