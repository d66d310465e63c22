"""Re-scoring: before the best policy is chosen, the top candidates are scored again at a higher fidelity, so a
fluke of the cheap search-time score never becomes the exported policy."""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from autoprune.study.trials import full_fidelity_ok, policy_of
from autoprune.trial import Score
from search_spaces.ground.options import check_int, from_mapping
from search_spaces.policy import Policy
from search_spaces.space import SearchSpace

RESCORED_COLUMNS = ("trial_id", "search_accuracy", "accuracy", "loss", "fidelity", "seconds")
# Finetune steps of a default re-score after a search that did not finetune (adaptive-BN scores): in
# bench/fidelity.py, 30 steps ranked candidates about as well as any proxy, adaptive BN alone clearly worse.
ADAPTIVE_BN_RESCORE_STEPS = 30


@dataclass(frozen=True)
class RescoreConfig:
    """How many of the best candidates are scored again, and how.

    Attributes:
        top_k: candidates re-scored (the best feasible ones by search-time accuracy); 0 or 1: none.
        finetune_steps: finetune steps of the re-score (None: three times the evaluator's; 30 after
            adaptive-BN scoring, when the evaluator does not finetune).
        val_batches: validation batches of the re-score (None: all of the validation data).
    """

    top_k: int = 3
    finetune_steps: int | None = None
    val_batches: int | None = None

    def __post_init__(self) -> None:
        check_int("rescore top_k", self.top_k, low=0)
        for name in ("finetune_steps", "val_batches"):
            if getattr(self, name) is not None:
                check_int(f"rescore {name}", getattr(self, name), low=1)

    @classmethod
    def from_value(cls, value: int | dict | RescoreConfig | None) -> RescoreConfig:
        """From a count (``3``), a mapping of the fields, or a config (None: the defaults)."""
        if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)):
            return cls(top_k=value)
        return from_mapping(cls, value, what="rescore options")

    def steps(self, search_steps: int) -> int:
        """Finetune steps of a re-score for a search that scored candidates with ``search_steps``."""
        return self.finetune_steps if self.finetune_steps is not None else 3 * search_steps or ADAPTIVE_BN_RESCORE_STEPS

    def to_dict(self) -> dict:
        return asdict(self)


def top_candidates(trials: pd.DataFrame, fidelity: int, k: int) -> pd.DataFrame:
    """The ``k`` most accurate feasible trials scored at ``fidelity`` or more (fewer FLOPs, then earlier first)."""
    ok = full_fidelity_ok(trials, fidelity)
    ok = ok[ok["feasible"]]
    return ok.sort_values(["accuracy", "flops", "trial_id"], ascending=[False, True, True]).head(k)


def rescore(candidates: pd.DataFrame, space: SearchSpace, score: Callable[[Policy], Score]) -> pd.DataFrame:
    """Score each candidate's policy again; rows in the candidates' order with the new accuracy (NaN when the
    re-score failed: ``score`` returns failed Scores for candidate-caused errors)."""
    rows = []
    for _, row in candidates.iterrows():
        again = score(policy_of(row, space))
        rows.append({"trial_id": int(row["trial_id"]), "search_accuracy": float(row["accuracy"]),
                     "accuracy": again.accuracy if again.ok else float("nan"), "loss": again.loss,
                     "fidelity": again.fidelity, "seconds": again.seconds})
    return pd.DataFrame(rows, columns=list(RESCORED_COLUMNS))


def best_rescored(rescored: pd.DataFrame) -> int | None:
    """The trial id with the best re-scored accuracy (the earlier candidate wins a tie); None if every
    re-score failed."""
    scored = rescored.dropna(subset=["accuracy"])
    if scored.empty:
        return None
    return int(scored.sort_values("accuracy", ascending=False, kind="stable").iloc[0]["trial_id"])
