"""search(): the one loop. space → searcher ⇄ executor → SearchResult (+ run directory).

The module is named ``loop`` so that it never shadows the ``autoprune.search`` function.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from torch import nn

from autoprune import rundir as rd
from autoprune.budget import Budget, CostModel
from autoprune.errors import AutopruneError, BudgetError, ConfigError, EvaluationFailedError, RunDirError
from autoprune.evaluate import (
    Evaluator,
    EvaluatorConfig,
    Score,
    count_flops,
    count_params,
    finetune,
    recalibrate_batchnorm,
    validate,
)
from autoprune.executors import Completed, Executor, make_executor
from autoprune.export import save_pruned_model
from autoprune.inputs import batch_size, shapes
from autoprune.latency import latency_ratio, with_batch
from autoprune.latency_check import check_and_repair
from autoprune.latency_lut import LatencyTable, latency_table
from autoprune.options import check_int
from autoprune.policy import Policy
from autoprune.registry import searcher_class
from autoprune.searcher import SearchContext, Searcher
from search_spaces.space import SearchSpace

log = logging.getLogger(__name__)
RATIO_PREFIX = "ratio:"
PHASE_COLUMNS = ("prune_seconds", "recalibrate_seconds", "finetune_seconds", "validate_seconds")


@dataclass(frozen=True)
class Progress:
    """A progress event for callbacks: ``stage`` is ``latency_table``, ``trial``, ``final`` or ``done``."""

    stage: str
    completed: int
    total: int
    best_accuracy: float | None = None
    message: str = ""


@dataclass
class SearchResult:
    """What a search returns.

    Attributes:
        best_policy: the best feasible policy at full fidelity (None if no trial was feasible).
        trials: one row per finished trial: ``trial_id``, ``status``, ``accuracy``, ``loss``, ``flops``,
            ``params``, ``flops_ratio``, ``params_ratio``, ``feasible``, ``fidelity``, ``seconds``,
            ``latency_ms`` (measured, latency budgets), where the seconds went (``prune_seconds``,
            ``recalibrate_seconds``, ``finetune_seconds``, ``validate_seconds``), ``error``, ``node``, ``pid``
            and one ``ratio:<group>`` column per group.
        pareto: the accuracy-vs-FLOPs non-dominated trials (ok, full fidelity).
        space: the search space.
        summary: baseline vs pruned accuracy, FLOPs, params and latency after the final finetune.
        pruned_model: the final pruned, finetuned model (None without a feasible policy).
        run_dir: where the outputs were written, if anywhere.
    """

    best_policy: Policy | None
    trials: pd.DataFrame
    pareto: pd.DataFrame
    space: SearchSpace
    summary: dict[str, Any] = field(default_factory=dict)
    pruned_model: nn.Module | None = None
    run_dir: Path | None = None


def _make_searcher(searcher: str | Searcher, options: Mapping[str, Any] | None) -> Searcher:
    if isinstance(searcher, Searcher):
        if options:
            raise ConfigError("searcher_options apply only when the searcher is given by name")
        return searcher
    if not isinstance(searcher, str):
        raise ConfigError(f"searcher must be a name or a Searcher instance, got {type(searcher).__name__}")
    cls = searcher_class(searcher)
    if not (isinstance(cls, type) and issubclass(cls, Searcher)):
        raise ConfigError(f"searcher {searcher!r} is {cls!r}, not an autoprune.Searcher subclass")
    try:
        return cls(**dict(options or {}))
    except TypeError as exc:
        raise ConfigError(f"bad options {dict(options or {})!r} for searcher {searcher!r}: {exc}") from exc


def _row(done: Completed, space: SearchSpace, cost_model: CostModel) -> dict[str, Any]:
    score = done.score
    row: dict[str, Any] = {"trial_id": done.trial.id, **score.to_dict()}
    row["flops_ratio"] = score.flops / cost_model.base.flops if score.ok else math.nan
    row["params_ratio"] = score.params / cost_model.base.params if score.ok else math.nan
    row["node"] = str(done.info.get("node", ""))
    row["pid"] = int(done.info.get("pid", -1))
    for name in space.names:
        row[RATIO_PREFIX + name] = done.trial.policy[name]
    return row


def _table(rows: Sequence[Mapping[str, Any]], space: SearchSpace) -> pd.DataFrame:
    columns = [
        "trial_id", "status", "accuracy", "loss", "flops", "params", "flops_ratio", "params_ratio", "feasible",
        "fidelity", "seconds", "latency_ms", *PHASE_COLUMNS, "error", "node", "pid",
        *(RATIO_PREFIX + n for n in space.names),
    ]
    table = pd.DataFrame(list(rows), columns=columns)
    table["error"] = table["error"].astype("string")
    return table.sort_values("trial_id", kind="stable").reset_index(drop=True)


def _full_fidelity_ok(trials: pd.DataFrame, fidelity: int) -> pd.DataFrame:
    return trials[(trials["status"] == "ok") & (trials["fidelity"] >= fidelity)]


def _best_row(trials: pd.DataFrame, fidelity: int) -> pd.Series | None:
    candidates = _full_fidelity_ok(trials, fidelity)
    candidates = candidates[candidates["feasible"]]
    if candidates.empty:
        return None
    ordered = candidates.sort_values(["accuracy", "flops", "trial_id"], ascending=[False, True, True])
    return ordered.iloc[0]


def pareto_front(trials: pd.DataFrame, fidelity: int) -> pd.DataFrame:
    """Trials not dominated in (higher accuracy, fewer FLOPs), sorted by FLOPs."""
    ok = _full_fidelity_ok(trials, fidelity).sort_values(["flops", "accuracy"], ascending=[True, False])
    front, best = [], -math.inf
    for idx, row in ok.iterrows():
        if row["accuracy"] > best:
            front.append(idx)
            best = row["accuracy"]
    return ok.loc[front].reset_index(drop=True)


def _policy_from_row(row: pd.Series, space: SearchSpace) -> Policy:
    return space.policy({n: float(row[RATIO_PREFIX + n]) for n in space.names})


def search(
    model: nn.Module,
    example_inputs: Any,
    *,
    budget: Budget,
    train_data: Iterable,
    val_data: Iterable,
    test_data: Iterable | None = None,
    searcher: str | Searcher = "random",
    searcher_options: Mapping[str, Any] | None = None,
    trials: int = 50,
    run_dir: str | Path | None = None,
    resume: bool = False,
    seed: int = 0,
    evaluator: EvaluatorConfig | Mapping[str, Any] | None = None,
    executor: str | Executor = "local",
    executor_options: Mapping[str, Any] | None = None,
    final_finetune_steps: int = 0,
    final_lr: float | None = None,
    space: SearchSpace | None = None,
    preset: str | None = None,
    ignore: Sequence[str] = (),
    round_to: int | None = None,
    max_ratio: float | None = None,
    measure_latency: bool = True,
    progress: Callable[[Progress], None] | None = None,
    run_config: Mapping[str, Any] | None = None,
) -> SearchResult:
    """Search per-group pruning ratios for ``model`` under ``budget`` and return the best policy.

    Args:
        model: the trained model (left unchanged).
        example_inputs: a tensor (or tuple) the model accepts; its batch size sets the FLOPs scale.
        budget: e.g. ``Budget.flops(0.5)``: at most half the unpruned FLOPs.
        train_data: batches of ``(inputs, targets)`` for BN recalibration and finetuning.
        val_data: batches scored for each candidate (use an unshuffled loader).
        test_data: batches for the final baseline-vs-pruned report (default: ``val_data``).
        searcher: a name (``random``, ``uniform``, or ``package.module:Class``) or a Searcher instance.
        searcher_options: keyword options for a searcher given by name.
        trials: number of evaluations to finish (a resumed search stops at this total).
        run_dir: directory for the outputs (None: nothing written). Must be empty unless ``resume``.
        resume: continue the search in ``run_dir`` with its saved trials and searcher state.
        seed: seeds the searcher and every evaluation.
        evaluator: :class:`EvaluatorConfig` or a mapping of its fields.
        executor: ``local`` (in this process), ``ray`` (Ray Tune trials), or an Executor instance.
        executor_options: keyword options for an executor given by name (see ``RayExecutor``).
        final_finetune_steps: finetune steps for the best policy before the final report.
        final_lr: learning rate of the final finetune (default: the evaluator's).
        space: a prebuilt search space (default: traced from ``model`` with preset/ignore/round_to/max_ratio).
        measure_latency: measure CPU latency of the baseline and pruned model for the summary.
        progress: called with a :class:`Progress` after every trial and at the end.
        run_config: extra settings recorded in the run directory's ``config.json`` (e.g. by the CLI).
    """
    if not isinstance(budget, Budget):
        raise BudgetError(f"budget must be an autoprune.Budget (e.g. Budget.flops(0.5)), got {budget!r}")
    check_int("trials", trials, low=1)
    check_int("final_finetune_steps", final_finetune_steps, low=0)
    check_int("seed", seed, low=0)
    eval_config = EvaluatorConfig.from_dict(
        {**EvaluatorConfig.from_dict(evaluator).to_dict(), "seed": seed}
    )
    if space is None:
        space = SearchSpace.from_model(
            model, example_inputs, preset=preset, ignore=ignore, round_to=round_to, max_ratio=max_ratio
        )
    if len(space) == 0:
        raise ConfigError(f"{space.architecture} has no prunable channel group (all ignored?)")
    table = None
    if budget.metric == "latency":
        saved = Path(run_dir) / rd.LATENCY_TABLE if run_dir is not None and resume else None
        if saved is not None and saved.exists():  # a resumed search keeps the table its trials were judged by
            try:
                table = LatencyTable.load(saved)
            except (ValueError, KeyError, TypeError) as exc:
                raise RunDirError(f"{str(saved)!r} is not a readable latency table ({exc}); delete it to "
                                  "rebuild the table, or start a new run directory") from exc
        else:
            if progress is not None:
                progress(Progress("latency_table", 0, trials, None, "measuring the latency lookup table"))
            table = latency_table(model, space, example_inputs, **budget.setting)
    cost_model = CostModel(space, table)
    cost_model.check_reachable(budget)
    search_engine = _make_searcher(searcher, searcher_options)
    run_executor = make_executor(executor, executor_options)

    config = {
        "fingerprint": space.fingerprint,
        "budget": budget.to_dict(),
        "searcher": searcher if isinstance(searcher, str) else type(searcher).__qualname__,
        "searcher_options": dict(searcher_options or {}),
        "seed": seed,
        "evaluator": eval_config.to_dict(),
        "trials": trials,
        "final_finetune_steps": final_finetune_steps,
        "executor": run_executor.describe(),
        "space": {"preset": space.preset, "ignored": list(space.ignored), "round_to": space.round_to,
                  "max_ratios": space.max_ratios},
        **dict(run_config or {}),
    }
    run = rd.RunDir(run_dir) if run_dir is not None else None
    resuming = run is not None and run.prepare(config, resume=resume)
    if run is not None and table is not None:
        table.save(run.file(rd.LATENCY_TABLE))
    context = SearchContext(
        space=space, budget=budget, cost_model=cost_model, seed=seed, trials=trials,
        run_dir=run.path if run else None, model=model, example_inputs=example_inputs,
        full_fidelity=eval_config.finetune_steps,
    )
    try:
        search_engine.setup(context)
    except Exception:
        if run is not None and not resuming:
            run.discard()  # nothing ran: leave no half-made run directory behind
        raise
    rows: list[dict[str, Any]] = []
    if resuming:
        previous = run.read_trials()
        state = run.read_searcher_state()
        if previous is not None:
            rows = previous.to_dict("records")
        if state is not None:
            search_engine.load_state_dict(state)
        if rows:
            search_engine.skip_ids_below(max(int(r["trial_id"]) for r in rows) + 1)
        log.info("resuming %s with %d finished trials", run.path, len(rows))

    evaluator_obj = Evaluator(
        model, example_inputs, train_data=train_data, val_data=val_data, budget=budget,
        cost_model=cost_model, config=eval_config,
    )
    feasible_done = [r["accuracy"] for r in rows if r["status"] == "ok" and r["feasible"]]
    best_acc: float | None = max(feasible_done) if feasible_done else None

    def record(done: Completed) -> None:
        nonlocal best_acc
        rows.append(_row(done, space, cost_model))
        if done.score.ok and done.score.feasible:
            best_acc = max(best_acc or 0.0, done.score.accuracy)
        log.info("trial %d: %s", done.trial.id, _describe(done.score))
        if run is not None:  # state first: a crash in between loses this row, never repeats it
            run.write_searcher_state(search_engine.state_dict())
            run.write_trials(_table(rows, space))
        if progress is not None:
            progress(Progress("trial", len(rows), trials, best_acc, _describe(done.score)))

    if len(rows) < trials:
        run_executor.run(search_engine, evaluator_obj, remaining=trials - len(rows), on_result=record,
                         run_dir=run.path if run else None)

    table = _table(rows, space)
    if len(table) and (table["status"] != "ok").all():
        raise EvaluationFailedError(
            f"all {len(table)} trials failed; the first error was: {table['error'].iloc[0]}"
        )
    full = eval_config.finetune_steps
    result = SearchResult(
        best_policy=None, trials=table, pareto=pareto_front(table, full), space=space,
        run_dir=run.path if run else None,
    )
    best = _best_row(table, full)
    if best is None:
        log.warning("no feasible trial finished; no best policy")
        return result
    if progress is not None:
        progress(Progress("final", len(rows), trials, best_acc, f"final finetune: {final_finetune_steps} steps"))
    _finalize(
        result, best, model, example_inputs, evaluator_obj, test_data if test_data is not None else val_data,
        final_finetune_steps, final_lr if final_lr is not None else eval_config.lr, measure_latency, run,
    )
    if progress is not None:
        progress(Progress("done", len(rows), trials, best_acc, "done"))
    return result


def _describe(score: Score) -> str:
    if not score.ok:
        return f"failed ({score.error})"
    return f"accuracy {score.accuracy:.4f}, flops {score.flops:,}, feasible {score.feasible}, {score.seconds:.2f}s"


def _finalize(
    result: SearchResult,
    best: pd.Series,
    model: nn.Module,
    example_inputs: Any,
    evaluator: Evaluator,
    test_data: Iterable,
    steps: int,
    lr: float,
    measure_latency: bool,
    run: rd.RunDir | None,
) -> None:
    """Finetune the best policy's model, compare it with the baseline, write the outputs."""
    space, cost_model, budget = result.space, evaluator.cost_model, evaluator.budget
    policy = _policy_from_row(best, space)
    latency_check = None
    if budget.metric == "latency":  # the table predicted it; the measurement decides (and repairs)
        policy, pruned, latency_check = check_and_repair(policy, model, example_inputs, budget, cost_model,
                                                         evaluator.prune)
    else:
        pruned = evaluator.prune(policy)
    device = evaluator.config.device
    pruned.model.to(device)
    recalibrate_batchnorm(pruned.model, evaluator.train_data, evaluator.config.bn_batches, device=device)
    finetune(pruned.model, evaluator.train_data, steps=steps, lr=lr, weight_decay=evaluator.config.weight_decay,
             device=device)
    pruned.model.to("cpu")  # exported, counted and timed on the CPU
    flops = count_flops(pruned.model, example_inputs)
    if budget.metric != "latency":
        limit = budget.limit(cost_model.base)
        measured = flops if budget.metric == "flops" else count_params(pruned.model)
        if measured > limit:  # the analytic cost model is exact; this guards the invariant
            raise AutopruneError(
                f"internal error: final model has {measured:,} {budget.metric} > budget {limit:,.0f}"
            )
    base_acc, base_loss = validate(model, test_data)
    acc, loss = validate(pruned.model, test_data)
    summary: dict[str, Any] = {
        "budget": budget.to_dict(),
        "best_trial_id": int(best["trial_id"]),
        "search_accuracy": float(best["accuracy"]),
        "final_finetune_steps": steps,
        "trials": len(result.trials),
        "failed_trials": int((result.trials["status"] != "ok").sum()),
        "baseline": {"accuracy": base_acc, "loss": base_loss, "flops": cost_model.base.flops,
                     "params": cost_model.base.params},
        "pruned": {"accuracy": acc, "loss": loss, "flops": flops, "params": count_params(pruned.model)},
    }
    summary["pruned"]["flops_ratio"] = flops / cost_model.base.flops
    summary["pruned"]["params_ratio"] = summary["pruned"]["params"] / cost_model.base.params
    if latency_check is not None:
        summary["latency_check"] = latency_check
    if measure_latency:
        setting = budget.setting if budget.metric == "latency" else \
            {"batch": batch_size(example_inputs), "threads": 1, "device": "cpu"}
        inputs = with_batch(example_inputs, setting["batch"])
        ratio, pruned_ms, base_ms = latency_ratio(pruned.model, model, inputs, threads=setting["threads"],
                                                  device=setting["device"])  # side by side, as the check
        summary["baseline"]["latency_ms"], summary["pruned"]["latency_ms"] = base_ms, pruned_ms
        summary["latency_speedup"] = 1 / ratio
        summary["latency_setting"] = setting
    scores = {"search_accuracy": float(best["accuracy"]), "final_accuracy": acc, "flops": flops,
              "params": summary["pruned"]["params"], "flops_ratio": summary["pruned"]["flops_ratio"]}
    result.best_policy = policy.with_metadata(budget=budget.to_dict(), scores=scores)
    result.pruned_model = pruned.model
    result.summary = summary
    if run is not None:
        result.best_policy.save(run.file(rd.BEST_POLICY))
        save_pruned_model(
            run.file(rd.MODEL_DIR), pruned.model, pruned.history,
            meta={"architecture": space.architecture, "input_shape": shapes(example_inputs),
                  "load": "autoprune.load_pruned_model(fresh_model, this_directory, example_inputs)"},
        )
        run.write_summary({**summary, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})

