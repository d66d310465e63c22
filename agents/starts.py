"""Starting points: the hand-made baselines' policies, so a searcher begins where one evaluation of them ends."""

from __future__ import annotations

from collections.abc import Sequence

from agents.global_magnitude import GlobalSearcher
from autoprune.searcher import SearchContext
from search_spaces.cost import uniform_ratios
from search_spaces.ground.errors import ConfigError

STARTS = ("uniform", "global")


def check_starts(value: bool | Sequence[str], searcher: str) -> tuple[str, ...]:
    """``warm_start`` as names: True is every one of :data:`STARTS`, False none; else a list of them."""
    if isinstance(value, bool):
        return STARTS if value else ()
    if isinstance(value, str) or not isinstance(value, Sequence) or any(v not in STARTS for v in value):
        raise ConfigError(f"{searcher} warm_start must be true, false or a list of {', '.join(STARTS)}; "
                          f"got {value!r}")
    return tuple(dict.fromkeys(value))


def starting_ratios(context: SearchContext, starts: Sequence[str]) -> list[dict[str, float]]:
    """The policies of ``starts`` on the budget's boundary, without repeats.

    ``global`` ranks channels by the model's weights: it is left out when the context has no model (a
    SearchContext built by hand; ``search()`` always passes it).
    """
    policies: list[dict[str, float]] = []
    for start in starts:
        if start == "uniform":
            ratios = uniform_ratios(context.cost_model, context.budget)
        elif context.model is None or context.example_inputs is None:
            continue
        else:
            searcher = GlobalSearcher()
            searcher.setup(context)
            ratios = dict(searcher.ask().policy)
        if ratios not in policies:
            policies.append(ratios)
    return policies
