"""A SearchConfig from the CLI's parsed flags, and the config of a resumed run (with its trust checks)."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from autoprune.cli.flags import EXECUTOR_FLAGS, RESUME_FLAGS, SEARCH_FLAGS, dest
from autoprune.composition.config import SearchConfig
from autoprune.evaluation.evaluator import EvaluatorConfig
from autoprune.evaluation.rungs import SchedulerConfig
from autoprune.executors import RayOptions
from autoprune.study.rundir import RunDir
from search_spaces.budget import Budget
from search_spaces.ground.documents import loads_yaml
from search_spaces.ground.errors import ConfigError, RunDirError


def with_executor_flags(config: SearchConfig, args: argparse.Namespace) -> SearchConfig:
    """Apply the executor flags; Ray options switch a local run to Ray, ``--executor local`` drops them."""
    given = {dest(f, k): getattr(args, dest(f, k), None) for f, k in EXECUTOR_FLAGS[1:]}
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
    others = [flag for flag, keywords in SEARCH_FLAGS
              if flag not in RESUME_FLAGS and getattr(args, dest(flag, keywords)) is not None]
    if args.config or others:
        given = [args.config] if args.config else []
        raise ConfigError(
            f"--resume continues a run with its saved settings; only {', '.join(RESUME_FLAGS)} and where evaluations "
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
