"""Errors raised for bad input. Every one is an :class:`AutopruneError`."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class AutopruneError(Exception):
    """Base class of every error autoprune raises for bad input or an impossible request."""


class ConfigError(AutopruneError, ValueError):
    """An option, a config file entry or a CLI flag has a value that is not accepted."""


class UnknownNameError(ConfigError, KeyError):
    """A name (searcher, model, dataset, importance, preset) is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class TraceError(AutopruneError):
    """The model could not be traced into a dependency graph."""


class PolicyError(AutopruneError, ValueError):
    """A policy does not fit the model or search space it is used with."""


class BudgetError(AutopruneError, ValueError):
    """A budget is malformed, or no policy inside the search space can meet it."""


class RunDirError(AutopruneError):
    """A run directory is missing, incomplete, or would be overwritten."""


class EvaluationFailedError(AutopruneError):
    """Every evaluation of a search failed: the setup, not the candidates, is at fault."""


class DataError(AutopruneError, ValueError):
    """A dataset or data loader cannot be used as given."""


def unknown_name(kind: str, name: object, accepted: list[str] | tuple[str, ...]) -> UnknownNameError:
    """Build an :class:`UnknownNameError` naming the bad value and the accepted ones (and the nearest of them when
    the name looks like a slip of the keyboard)."""
    return UnknownNameError(f"unknown {kind} {name!r}; accepted: {', '.join(sorted(accepted))}"
                            f"{did_you_mean(name, accepted)}")


def did_you_mean(name: object, accepted: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` when ``name`` is close to one of ``accepted`` (:func:`difflib.get_close_matches`,
    ignoring case), else an empty string."""
    choices = {str(choice).lower(): str(choice) for choice in accepted}
    close = difflib.get_close_matches(str(name).lower(), list(choices), n=1, cutoff=0.6)
    return f" (did you mean {choices[close[0]]!r}?)" if close else ""
