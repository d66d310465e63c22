"""A resumed search whose new trials beat none of the old keeps its final outputs instead of redoing them."""

from __future__ import annotations

import copy
import shutil
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from torch import nn

from autoprune.final.summary import Summary
from autoprune.prune.export import load_pruned_model
from autoprune.study import rundir as rd
from search_spaces.ground.errors import AutopruneError
from search_spaces.ground.io import atomic_write_json
from search_spaces.policy import Policy


@dataclass(frozen=True)
class ReusedFinal:
    """The final outputs a run directory already holds: the policy, its pruned model and the summary."""

    policy: Policy
    model: nn.Module
    summary: Summary


def stored_summary(run: rd.RunDir, *, candidates: Collection[int], settings: Mapping[str, Any]) -> Summary | None:
    """The run's ``summary.json`` when its final step chose among the same ``candidates`` (trial ids: the
    re-scored ones, or the best alone) with the same ``settings`` (:meth:`FinalConfig.settings`); None when it
    must be redone."""
    if not run.file(rd.SUMMARY).exists():
        return None
    try:
        summary = Summary.from_dict(rd.read_json(run.file(rd.SUMMARY), rd.MAX_CONFIG_BYTES),
                                     source=repr(str(run.file(rd.SUMMARY))))
    except AutopruneError:
        return None  # unreadable: the final step writes a new one
    chosen_from = {r.trial_id for r in summary.rescored} or {summary.best_trial_id}
    if chosen_from != set(candidates) or summary.final_settings != settings:
        return None
    if settings.get("measure_latency") and not summary.speed:  # written before the never-slower check
        return None
    return summary


def reuse_final(run: rd.RunDir, summary: Summary, *, trials: int, failed_trials: int, model: nn.Module,
               example_inputs: Any) -> ReusedFinal:
    """Keep the stored policy and model, with the summary's trial counts brought up to date (written as one
    unit, like every final output), and load them back."""
    updated = replace(summary, trials=trials, failed_trials=failed_trials)
    current = run.file(rd.FINAL).resolve()
    policy = Policy.load(current / rd.BEST_POLICY)  # read before anything is copied: a damaged output is never kept
    pruned = load_pruned_model(copy.deepcopy(model), current / rd.MODEL_DIR, example_inputs).eval()

    def write(directory: Path) -> None:
        shutil.copy2(current / rd.BEST_POLICY, directory / rd.BEST_POLICY)
        shutil.copytree(current / rd.MODEL_DIR, directory / rd.MODEL_DIR)
        atomic_write_json(directory / rd.SUMMARY, updated.to_dict())

    run.write_final(write)
    return ReusedFinal(policy, pruned, updated)
