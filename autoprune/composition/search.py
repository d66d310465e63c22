"""search(): the public entry point, a short composition of the parts.

space → cost model (+ latency table) → searcher ⇄ executor (evaluator) → study (the books) → final step.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
from torch import nn

from autoprune.composition.options import RunOptions
from autoprune.composition.time_budget import TimeLimited, parse_duration
from autoprune.evaluation.chance_watch import ChanceWatch
from autoprune.evaluation.evaluator import Evaluator, EvaluatorConfig
from autoprune.evaluation.rungs import check_schedulable
from autoprune.executors import Executor, RayOptions, make_executor
from autoprune.final.finalize import FinalConfig, FinalModel, finalize
from autoprune.final.rescore import RescoreConfig, best_rescored, rescore, top_candidates
from autoprune.final.reuse import ReusedFinal, reuse_final, stored_summary
from autoprune.final.speed_check import checked_runtimes
from autoprune.final.summary import Summary
from autoprune.latency.table import LatencyTable, latency_table
from autoprune.prune.export import export_model
from autoprune.report.run_record import RunRecord, save_report, write_report
from autoprune.searcher import SearchContext, Searcher, make_searcher
from autoprune.study import rundir as rd
from autoprune.study.identity import data_identity, model_digest
from autoprune.study.progress import SearchDisplay
from autoprune.study.study import Progress, Study
from autoprune.study.tracking import Tracker, Trackers, check_tracking, make_trackers
from autoprune.study.trials import best_row, pareto_front, policy_of
from autoprune.trial import Completed
from search_spaces.budget import Budget, LatencyBudget
from search_spaces.cost import CostModel
from search_spaces.ground.errors import AutopruneError, BudgetError, ConfigError, RunDirError
from search_spaces.ground.inputs import shapes
from search_spaces.ground.io import atomic_write_json
from search_spaces.ground.options import check_batches, check_int, check_module, check_seed
from search_spaces.policy import Policy
from search_spaces.space import SearchSpace
from search_spaces.space_options import SpaceOptions
from search_spaces.widths import measured_round_to

log = logging.getLogger(__name__)
CUDA_ROUND_TO = 8  # the default channel multiple when latency is measured on a GPU
__all__ = ["Progress", "SearchResult", "search"]


@dataclass
class SearchResult:
    """What a search returns.

    Attributes:
        best_policy: the best feasible policy at full fidelity (a search without one raises BudgetError).
        trials: one row per finished trial: ``trial_id``, ``status``, ``accuracy``, ``loss``, ``flops``,
            ``params``, ``flops_ratio``, ``params_ratio``, ``feasible``, ``fidelity``, ``seconds``,
            ``latency_ms`` (measured, latency budgets), where the seconds went (``prune_seconds``,
            ``recalibrate_seconds``, ``finetune_seconds``, ``validate_seconds``), ``error``, ``node``, ``pid``,
            ``finished_at`` (UNIX time) and one ``ratio:<group>`` column per group.
        pareto: the accuracy-vs-FLOPs non-dominated trials (ok, full fidelity).
        space: the search space.
        summary: baseline vs pruned accuracy, FLOPs, params and latency after the final finetune, and the
            groups the trace-time check excluded.
        pruned_model: the final pruned, finetuned model.
        run_dir: where the outputs were written, if anywhere.
        config: the search's settings as the run directory's ``config.json`` records them.
    """

    best_policy: Policy | None
    trials: pd.DataFrame
    pareto: pd.DataFrame
    space: SearchSpace
    summary: Summary | None = None
    pruned_model: nn.Module | None = None
    run_dir: Path | None = None
    config: dict[str, Any] = field(default_factory=dict)

    def report(self, path: str | Path | None = None) -> Path:
        """Write the HTML report (default: ``run_dir/report.html``; a search without a run directory needs
        ``path``) and return its path. Every search with a run directory writes it at the end."""
        if self.run_dir is not None:
            return write_report(self.run_dir, path)
        if path is None:
            raise ConfigError("this search wrote no run directory: give report(path) a file to write")
        record = RunRecord(self.config, self.trials, self.summary, self.best_policy)
        return save_report(record, path)


#: search()'s keywords before its settings were grouped, and where each went.
MOVED_KEYWORDS = {
    "final_finetune_steps": "final=FinalConfig(steps=...)", "final_lr": "final=FinalConfig(lr=...)",
    "final_schedule": "final=FinalConfig(schedule=...)", "final_recovery": "final=FinalConfig(recovery=...)",
    "final_distill": "final=FinalConfig(distill=...)",
    "rewind_state": "final=FinalConfig(rewind_state=...)", "rescore": "final=FinalConfig(rescore=...)",
    "measure_latency": "final=FinalConfig(measure_latency=...)", "preset": "space=SpaceOptions(preset=...)",
    "ignore": "space=SpaceOptions(ignore=...)", "round_to": "space=SpaceOptions(round_to=...)",
    "max_ratio": "space=SpaceOptions(max_ratio=...)", "granularity": "space=SpaceOptions(granularity=...)",
    "run_dir": "run=RunOptions(dir=...)", "resume": "run=RunOptions(resume=...)",
    "scheduler": "run=RunOptions(scheduler=...)", "time_budget": "run=RunOptions(time_budget=...)",
    "tracking": "run=RunOptions(tracking=...)", "progress": "run=RunOptions(progress=...)",
    "run_config": "run=RunOptions(record=...)", "executor_options": "executor=RayOptions(...)",
}


def _refuse_moved_keywords(function: Callable[..., SearchResult]) -> Callable[..., SearchResult]:
    """An old flat keyword gets an error naming its new place (a mapping of the same fields works too)."""

    @functools.wraps(function)
    def checked(*args: Any, **kwargs: Any) -> SearchResult:
        moved = [name for name in kwargs if name in MOVED_KEYWORDS]
        if moved:
            raise ConfigError("search() groups its settings now: " + "; ".join(
                f"{name}= is {MOVED_KEYWORDS[name]}" for name in moved))
        return function(*args, **kwargs)

    return checked


@_refuse_moved_keywords
def search(
    model: nn.Module, example_inputs: Any, *, budget: Budget, train_data: Iterable, val_data: Iterable,
    test_data: Iterable | None = None, searcher: str | Searcher = "random",
    searcher_options: Mapping[str, Any] | None = None, trials: int = 50, seed: int = 0,
    evaluator: EvaluatorConfig | Mapping[str, Any] | None = None, executor: str | RayOptions | Executor = "local",
    space: SearchSpace | SpaceOptions | Mapping[str, Any] | None = None,
    final: FinalConfig | Mapping[str, Any] | None = None, run: RunOptions | Mapping[str, Any] | None = None,
) -> SearchResult:
    """Search per-group pruning ratios for ``model`` (left unchanged) under ``budget``; return the best policy.

    ``example_inputs`` (a tensor or tuple; its batch size sets the FLOPs scale); ``train_data`` for BatchNorm
    recalibration and finetuning, ``val_data`` to score candidates (unshuffled), ``test_data`` for the final
    comparison (default ``val_data``): iterables of ``(inputs, targets)`` batches. ``searcher``: a name
    (``random``, ``amc``, ``package.module:Class``, ...) with ``searcher_options``, or an instance. ``trials``:
    evaluations to finish (a resumed search stops at this total); ``seed`` seeds the searcher and every
    evaluation. Each group of settings is a typed value or a mapping of its fields: ``evaluator``
    (:class:`EvaluatorConfig`: how a candidate is scored), ``executor`` (``local``, ``ray`` or
    :class:`RayOptions`, or an Executor), ``space`` (:class:`SpaceOptions`: how the model is traced, or a
    prebuilt :class:`SearchSpace`), ``final`` (:class:`FinalConfig`: how the best policy becomes the exported
    model) and ``run`` (:class:`RunOptions`: run directory, resume, scheduler, time budget, trackers, progress).
    """
    settings, final, recipe = RunOptions.from_value(run), FinalConfig.from_value(final), _recipe(evaluator, seed)
    if settings.progress is True:  # the same call, drawn by a SearchDisplay
        with SearchDisplay() as display:
            return search(model, example_inputs, budget=budget, train_data=train_data, val_data=val_data,
                          test_data=test_data, searcher=searcher, searcher_options=searcher_options, trials=trials,
                          seed=seed, evaluator=recipe, executor=executor, space=space, final=final,
                          run=replace(settings, progress=display))
    _check_arguments(model, budget, trials, seed, train_data, val_data, test_data, space)
    started, limit = time.monotonic(), _limit(settings.time_budget)
    trackers = check_tracking(settings.tracking, settings.dir)
    if settings.dir is not None:
        rd.check_can_start(settings.dir, resume=settings.resume)  # before tracing or timing anything
    check_schedulable(settings.scheduler, recipe.finetune_steps)
    space = _space(model, example_inputs, space, budget, final, settings)
    cost_model = _cost_model(model, space, example_inputs, budget, settings, trials)
    cost_model.check_reachable(budget)
    chosen, runner = make_searcher(searcher, searcher_options), make_executor(executor)
    context = _context(model, example_inputs, space, cost_model, budget, seed, trials, recipe, settings)
    scorer = Evaluator(model, example_inputs, train_data=train_data, val_data=val_data, budget=budget,
                       cost_model=cost_model, config=recipe)
    scorer.check_first_batch()  # a model or data set that cannot be scored fails here, once, naming itself
    config = {**_run_record(context, searcher, searcher_options, recipe, final, runner, settings, train_data,
                            val_data), "time_budget_seconds": limit, "tracking": list(trackers),
              "chance_accuracy": scorer.chance_accuracy()}  # for the report's near-chance warning
    study = Study.open(context, chosen, settings.scheduler.make(), config=config, resume=settings.resume,
                       progress=settings.progress)
    with _closing(study):
        if study.run is not None and cost_model.latency is not None:
            cost_model.latency.save(study.run.file(rd.LATENCY_TABLE))
        tracker = make_trackers(trackers, study.path, config) if trackers else Trackers(())
        if study.remaining:
            _run_trials(study, runner, chosen, scorer, tracker, None if limit is None else (limit, started),
                        ChanceWatch(config["chance_accuracy"], recipe,
                                    screened=(context.learning_fidelity or 0) < context.full_fidelity))
        result = _result(study, scorer, final, test_data if test_data is not None else val_data, config)
        _report(result, tracker)
    return result


def _context(model: nn.Module, example_inputs: Any, space: SearchSpace, cost_model: CostModel, budget: Budget,
             seed: int, trials: int, recipe: EvaluatorConfig, settings: RunOptions) -> SearchContext:
    """What the searcher is told: the problem, and the fidelities its scores come at (full, and the one every
    candidate is scored at, which it learns from)."""
    full = recipe.finetune_steps
    return SearchContext(space=space, budget=budget, cost_model=cost_model, seed=seed, trials=trials,
                         run_dir=None if settings.dir is None else Path(settings.dir), model=model,
                         example_inputs=example_inputs, full_fidelity=full,
                         learning_fidelity=settings.scheduler.make().learning_fidelity(full))


def _recipe(evaluator: EvaluatorConfig | Mapping[str, Any] | None, seed: int) -> EvaluatorConfig:
    """The evaluator's settings, seeded by the search's seed."""
    check_seed("seed", seed)
    return replace(EvaluatorConfig.from_dict(evaluator), seed=seed)


def _limit(time_budget: float | str | None) -> float | None:
    return None if time_budget is None else parse_duration(time_budget)


def _check_arguments(model: nn.Module, budget: Budget, trials: int, seed: int, train_data: Iterable,
                     val_data: Iterable, test_data: Iterable | None,
                     space: SearchSpace | SpaceOptions | Mapping[str, Any] | None) -> None:
    """Every check that needs no tracing, before anything is traced or timed."""
    if not isinstance(budget, Budget):
        raise BudgetError(f"budget must be an autoprune.Budget (e.g. Budget.flops(0.5)), got {budget!r}")
    check_module("model", model)
    granularity = space.granularity if isinstance(space, SearchSpace) else SpaceOptions.from_value(space).granularity
    budget.check_granularity(granularity)
    check_int("trials", trials, low=1)
    for name, data in (("train_data", train_data), ("val_data", val_data)):
        check_batches(name, data)
    if test_data is not None:
        check_batches("test_data", test_data)


def _space(model: nn.Module, example_inputs: Any, space: SearchSpace | SpaceOptions | Mapping[str, Any] | None,
           budget: Budget, final: FinalConfig, settings: RunOptions) -> SearchSpace:
    """The prebuilt space, or the model traced with the space options (``round_to="auto"``: measured, or the
    resumed run's)."""
    if not isinstance(space, SearchSpace):
        options = SpaceOptions.from_value(space)
        round_to = _round_to(model, example_inputs, options, budget, final, settings)
        space = SearchSpace.from_model(model, example_inputs, preset=options.preset, ignore=options.ignore,
                                       round_to=round_to, max_ratio=options.max_ratio,
                                       granularity=options.granularity)
    if len(space) == 0:
        raise ConfigError(f"{space.architecture} has no prunable channel group (all ignored?)")
    return space


def _round_to(model: nn.Module, example_inputs: Any, options: SpaceOptions, budget: Budget, final: FinalConfig,
              settings: RunOptions) -> int | None:
    """The channel multiple: a number as given; else a resumed run's own (a preset's default may have changed
    since it started); ``auto``: measured in the runtimes the model will run in; 8 on a GPU; None: the preset's."""
    if isinstance(options.round_to, int):
        return options.round_to
    saved = _saved_round_to(settings)
    if saved is not None:
        return saved
    setting = budget.timing(example_inputs)
    if options.round_to == "auto":
        probe = SearchSpace.from_model(model, example_inputs, preset=options.preset, ignore=options.ignore,
                                       round_to=1, max_ratio=options.max_ratio, granularity=options.granularity)
        return measured_round_to(model, example_inputs, probe, runtimes=checked_runtimes(setting, final.export),
                                 threads=setting.threads, device=setting.device, batch=setting.batch)
    return CUDA_ROUND_TO if setting.device.startswith("cuda") else None


def _saved_round_to(settings: RunOptions) -> int | None:
    """The ``round_to`` a resumed run recorded (None: not resuming, or nothing usable recorded: the run directory's
    own checks then say why it cannot resume)."""
    if not settings.resume or settings.dir is None or not (Path(settings.dir) / rd.CONFIG).is_file():
        return None
    space = rd.RunDir(settings.dir).read_config().get("space")
    value = space.get("round_to") if isinstance(space, Mapping) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else None


@contextlib.contextmanager
def _closing(study: Study) -> Iterator[None]:
    """Close the study when the block ends; marked failed when it raised (interrupts too)."""
    try:
        yield
    except BaseException:
        study.close(failed=True)
        raise
    study.close()


def _report(result: SearchResult, tracker: Tracker) -> None:
    """Write report.html and hand the final outputs to the trackers (a search with a run directory)."""
    if result.run_dir is None:
        return
    log.info("report: %s", result.report())
    tracker.final(None if result.summary is None else result.summary.to_dict(),
                  [p for p in (result.run_dir / rd.BEST_POLICY, result.run_dir / rd.SUMMARY) if p.exists()])


def _run_trials(study: Study, runner: Executor, searcher: Searcher, scorer: Evaluator, tracker: Tracker,
                limit: tuple[float, float] | None, watch: ChanceWatch) -> None:
    """The trials still to run; with a time limit (seconds, start), no trial starts once it has passed; ``watch``
    warns when the first scores are all near chance."""
    asker = searcher if limit is None else TimeLimited(searcher, limit[0], start=limit[1])
    watch.resume(row.get(watch.column) for row in study.rows if row["status"] == "ok")

    def record(done: Completed) -> None:
        study.record(done)
        tracker.trial(study.rows[-1])
        warning = watch.observe(done.score)
        if warning is not None:
            log.warning(warning)
            study.notify("warning", warning)

    runner.run(asker, scorer, scheduler=study.scheduler, remaining=study.remaining, on_result=record,
               run_dir=study.path)
    if limit is not None and study.remaining and asker.expired:
        study.notify("stopped", f"time budget of {limit[0]:,.0f} s used up after {len(study.rows)} of "
                     f"{study.context.trials} trials; the best so far is finalized (resume to run the rest)")


def _cost_model(
    model: nn.Module, space: SearchSpace, example_inputs: Any, budget: Budget, settings: RunOptions, trials: int,
) -> CostModel:
    """The analytic cost model; a latency budget adds the lookup table (a resumed search keeps its own)."""
    if not isinstance(budget, LatencyBudget):
        return CostModel(space)
    saved = Path(settings.dir) / rd.LATENCY_TABLE if settings.dir is not None and settings.resume else None
    progress = settings.progress
    if saved is not None and saved.exists():  # a resumed search keeps the table its trials were judged by
        try:
            return CostModel(space, LatencyTable.load(saved))
        except (ValueError, KeyError, TypeError) as exc:
            raise RunDirError(f"{str(saved)!r} is not a readable latency table ({exc}); delete it to "
                              "rebuild the table, or start a new run directory") from exc
    if progress is not None:
        progress(Progress("latency_table", 0, trials, None, "measuring the latency lookup table"))
    return CostModel(space, latency_table(model, space, example_inputs, **budget.setting.to_dict()))


def _run_record(
    context: SearchContext, searcher: str | Searcher, searcher_options: Mapping[str, Any] | None,
    recipe: EvaluatorConfig, final: FinalConfig, runner: Executor, settings: RunOptions, train_data: Iterable,
    val_data: Iterable,
) -> dict[str, Any]:
    """What ``config.json`` records; the entries in ``rundir.RESUME_KEYS`` must match on resume."""
    space = context.space
    return {
        "format_version": rd.FORMAT_VERSION,
        "model_sha256": model_digest(context.model),
        "data": data_identity(train_data, val_data),
        "fingerprint": space.fingerprint,
        "budget": context.budget.to_dict(),
        "searcher": searcher if isinstance(searcher, str) else type(searcher).__qualname__,
        "searcher_options": dict(searcher_options or {}),
        "seed": context.seed,
        "evaluator": recipe.to_dict(),
        "scheduler": settings.scheduler.to_dict(),
        "trials": context.trials,
        "final_finetune_steps": final.steps,
        "final_schedule": asdict(final.schedule),
        "final_recovery": final.recovery,
        "rescore": final.rescore.to_dict(),
        "executor": runner.describe(),
        "space": {"preset": space.preset, "ignored": list(space.ignored), "round_to": space.round_to,
                  "max_ratios": space.max_ratios, "granularity": space.granularity,
                  "group_round_to": {g.name: g.round_to for g in space if g.round_to != space.round_to},
                  "head_groups": [g.name for g in space if g.unit == "head"]},
        "excluded": dict(space.excluded),  # groups the trace-time check left out, for the report while it runs
        **dict(settings.record or {}),
    }


def _result(study: Study, evaluator: Evaluator, final: FinalConfig, test_data: Iterable,
            config: dict[str, Any]) -> SearchResult:
    """The search's result; with a feasible trial, the best policy goes through the final step and is written out."""
    if study.run is not None:
        study.run.confirm_config()
    table, space, full = study.checked_table(), study.context.space, evaluator.config.finetune_steps
    result = SearchResult(best_policy=None, trials=table, pareto=pareto_front(table, full), space=space,
                          run_dir=study.path, config=config)
    best = best_row(table, full)
    if best is None:
        if study.path is not None:  # the trials are worth a look even without a policy
            log.info("report: %s", write_report(study.path))
        raise BudgetError(_no_feasible_trial(table, full, study.context.budget))
    failed = int((table["status"] != "ok").sum())
    reused = _reused(study, table, int(best["trial_id"]), evaluator, final, failed)
    if reused is not None:
        result.best_policy, result.pruned_model, result.summary = reused.policy, reused.model, reused.summary
        study.notify("done", "done")
        return result
    rescored = _rescored(study, table, evaluator, final.rescore)
    winner = best_rescored(rescored) if rescored is not None else None
    if winner is not None:
        best = table[table["trial_id"] == winner].iloc[0]
    study.notify("final", f"final finetune: {final.steps} steps")
    outcome = finalize(
        policy_of(best, space), evaluator=evaluator, budget=study.context.budget, test_data=test_data,
        config=final, best_trial=(int(best["trial_id"]), float(best["accuracy"])), trials=len(table),
        failed_trials=failed, rescored=rescored,
    )
    if study.run is not None:
        _write_outputs(study.run, outcome, space, evaluator.example_inputs, final.export)
    result.best_policy, result.pruned_model, result.summary = outcome.policy, outcome.pruned.model, outcome.summary
    study.notify("done", "done")
    return result


def _no_feasible_trial(table: pd.DataFrame, full_fidelity: int, budget: Budget) -> str:
    """Why a search ended without a policy: how many trials failed, missed the budget or stopped early."""
    ok = table["status"] == "ok"
    early = int((ok & (table["fidelity"] < full_fidelity)).sum())
    infeasible = int((ok & ~table["feasible"].astype(bool)).sum())
    return (f"no trial of {len(table)} met budget {budget.describe()} at full fidelity ({int((~ok).sum())} failed, "
            f"{infeasible} missed the budget, {early} stopped early); nothing to export: loosen the budget or run "
            "more trials")


def _reused(study: Study, table: pd.DataFrame, best_id: int, evaluator: Evaluator, final: FinalConfig,
          failed: int) -> ReusedFinal | None:
    """A resumed search's stored final outputs, kept when no new trial is among the candidates for the final
    step (None: the final step runs)."""
    if not study.resumed or study.run is None:
        return None
    candidates = top_candidates(table, evaluator.config.finetune_steps, final.rescore.top_k)
    ids = set(candidates["trial_id"].astype(int)) if final.rescore.top_k >= 2 and len(candidates) >= 2 else {best_id}
    stored = stored_summary(study.run, candidates=ids, settings=final.settings())
    if stored is None:
        return None
    try:
        reused = reuse_final(study.run, stored, trials=len(table), failed_trials=failed, model=evaluator.model,
                             example_inputs=evaluator.example_inputs)
    except AutopruneError as exc:  # damaged or missing: the final step makes it again
        study.notify("final", f"the stored final model cannot be kept ({exc}); making it again")
        return None
    study.notify("final", f"no new trial is among the best; keeping the final model of trial {stored.best_trial_id}")
    return reused


def _rescored(study: Study, table: pd.DataFrame, evaluator: Evaluator, config: RescoreConfig) -> pd.DataFrame | None:
    """The top candidates scored again at the re-score fidelity (None when there is nothing to compare)."""
    candidates = top_candidates(table, evaluator.config.finetune_steps, config.top_k)
    if config.top_k < 2 or len(candidates) < 2:
        return None
    steps = config.steps(evaluator.config.finetune_steps)
    study.notify("rescore", f"re-scoring the best {len(candidates)} candidates at {steps} finetune steps")
    rescorer = evaluator.with_config(replace(evaluator.config, finetune_steps=steps, val_batches=config.val_batches))
    return rescore(candidates, study.context.space, rescorer.evaluate_safely)


def _write_outputs(run: rd.RunDir, outcome: FinalModel, space: SearchSpace, example_inputs: Any,
                   formats: tuple[str, ...]) -> None:
    """best_policy.json, model/ (state dict + pruning history, the other export ``formats``; the sparse form too,
    element-wise) and summary.json, switched in as one unit."""

    def write(directory: Path) -> None:
        outcome.policy.save(directory / rd.BEST_POLICY)
        export_model(
            outcome.pruned.model, example_inputs, directory / rd.MODEL_DIR,
            (*formats, *(("sparse",) if space.granularity == "element" else ())), history=outcome.pruned.history,
            meta={"architecture": space.architecture, "input_shape": shapes(example_inputs),
                  "load": "autoprune.load_pruned_model(fresh_model, this_directory, example_inputs)"},
        )
        atomic_write_json(directory / rd.SUMMARY, outcome.summary.to_dict())

    run.write_final(write)
