"""The trials table: one row per finished trial, its columns, and what is read out of it (best, Pareto front)."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from autoprune.trial import Completed
from search_spaces.cost import CostModel
from search_spaces.policy import Policy
from search_spaces.space import SearchSpace

RATIO_PREFIX = "ratio:"
PHASE_COLUMNS = ("prune_seconds", "recalibrate_seconds", "finetune_seconds", "validate_seconds")
COLUMNS = ("trial_id", "status", "accuracy", "loss", "flops", "params", "flops_ratio", "params_ratio",
           "nonzeros_ratio", "feasible", "fidelity", "rung", "first_accuracy", "seconds", "latency_ms",
           *PHASE_COLUMNS, "error", "node", "pid", "finished_at")


def trial_row(done: Completed, space: SearchSpace, cost_model: CostModel) -> dict[str, Any]:
    """The table row of a finished trial: its score, cost ratios, where and when (UNIX time) it finished, and its
    policy's ratios."""
    score = done.score
    row: dict[str, Any] = {"trial_id": done.trial.id, **score.to_dict()}
    row["flops_ratio"] = score.flops / cost_model.base.flops if score.ok else math.nan
    row["params_ratio"] = score.params / cost_model.base.params if score.ok else math.nan
    nonzeros = cost_model.cost(done.trial.policy).nonzeros
    row["nonzeros_ratio"] = nonzeros / cost_model.base.nonzeros if score.ok and nonzeros is not None else math.nan
    row["node"] = str(done.info.get("node", ""))
    row["pid"] = int(done.info.get("pid", -1))
    row["finished_at"] = time.time()
    for name in space.names:
        row[RATIO_PREFIX + name] = done.trial.policy[name]
    return row


def trials_table(rows: Sequence[Mapping[str, Any]], groups: Sequence[str]) -> pd.DataFrame:
    """Rows as a DataFrame in trial-id order, with every column present (one ratio column per name in ``groups``)."""
    table = pd.DataFrame(list(rows), columns=[*COLUMNS, *(RATIO_PREFIX + n for n in groups)])
    table["error"] = table["error"].astype("string")
    return table.sort_values("trial_id", kind="stable").reset_index(drop=True)


def full_fidelity_ok(trials: pd.DataFrame, fidelity: int) -> pd.DataFrame:
    """Successful trials scored at ``fidelity`` finetune steps or more."""
    return trials[(trials["status"] == "ok") & (trials["fidelity"] >= fidelity)]


def best_row(trials: pd.DataFrame, fidelity: int) -> pd.Series | None:
    """The most accurate feasible full-fidelity trial (fewer FLOPs, then the earlier trial break ties)."""
    candidates = full_fidelity_ok(trials, fidelity)
    candidates = candidates[candidates["feasible"]]
    if candidates.empty:
        return None
    ordered = candidates.sort_values(["accuracy", "flops", "trial_id"], ascending=[False, True, True])
    return ordered.iloc[0]


def pareto_front(trials: pd.DataFrame, fidelity: int, *, cost: str = "flops") -> pd.DataFrame:
    """Trials not dominated in (higher accuracy, lower ``cost``: a column such as ``flops`` or ``nonzeros_ratio``),
    sorted by that cost."""
    ok = full_fidelity_ok(trials, fidelity).sort_values([cost, "accuracy"], ascending=[True, False])
    front, best = [], -math.inf
    for idx, row in ok.iterrows():
        if row["accuracy"] > best:
            front.append(idx)
            best = row["accuracy"]
    return ok.loc[front].reset_index(drop=True)


def policy_of(row: pd.Series, space: SearchSpace) -> Policy:
    """The policy a trial row evaluated."""
    return space.policy({n: float(row[RATIO_PREFIX + n]) for n in space.names})
