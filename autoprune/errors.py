"""The errors autoprune raises for bad input, under their public names.

They are defined with the lowest layer (``search_spaces.ground.errors``, which everything imports); this module
gives them their public home: ``autoprune.errors.ConfigError`` is what a traceback, ``repr`` and
``type(error).__module__`` show, and where pickles (errors sent back from Ray workers) find them. Catch them as
``autoprune.ConfigError`` or ``autoprune.errors.ConfigError``: the same classes.
"""

from __future__ import annotations

from search_spaces.ground.errors import (
    AutopruneError,
    BudgetError,
    ConfigError,
    DataError,
    EvaluationFailedError,
    PolicyError,
    RunDirError,
    TraceError,
    UnknownNameError,
)

__all__ = ["AutopruneError", "BudgetError", "ConfigError", "DataError", "EvaluationFailedError", "PolicyError",
           "RunDirError", "TraceError", "UnknownNameError"]

for _error in (AutopruneError, BudgetError, ConfigError, DataError, EvaluationFailedError, PolicyError, RunDirError,
               TraceError, UnknownNameError):
    _error.__module__ = __name__
