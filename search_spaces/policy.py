"""Policy: a frozen mapping from channel-group name to the fraction of its channels removed (or, for an element
space, from weight-tensor name to its sparsity)."""

from __future__ import annotations

import json
import logging
import math
import numbers
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

import numpy as np

from search_spaces.ground.errors import ConfigError, PolicyError
from search_spaces.ground.io import atomic_write_text, read_json_file

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_KIND = "search_spaces.policy"


class _Group(Protocol):
    name: str
    max_ratio: float


class _Space(Protocol):
    architecture: str
    granularity: str
    names: tuple[str, ...]
    fingerprint: dict[str, Any]

    def __getitem__(self, key: str) -> _Group: ...


@dataclass(frozen=True, eq=False)
class Policy(Mapping[str, float]):
    """Per-group pruning ratios (0 keeps every channel), with the model fingerprint they were made for.

    Attributes:
        ratios: group name → fraction of channels removed, each in [0, 1).
        fingerprint: ``{"architecture": str, "groups": {name: channels}}`` or None.
        budget: the budget the policy was searched for (as :meth:`autoprune.Budget.to_dict`), or None.
        scores: scores it achieved (accuracy, flops, ...), or None.
    """

    ratios: Mapping[str, float]
    fingerprint: Mapping[str, Any] | None = None
    budget: Mapping[str, Any] | None = None
    scores: Mapping[str, Any] | None = field(default=None)

    def __post_init__(self) -> None:
        if not isinstance(self.ratios, Mapping):
            raise PolicyError(f"ratios must be a mapping of group name to ratio, got {type(self.ratios).__name__}")
        clean: dict[str, float] = {}
        for name, value in self.ratios.items():
            if not isinstance(name, str):
                raise PolicyError(f"group names must be strings, got {name!r}")
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise PolicyError(f"ratio of group {name!r} must be a number in [0, 1), got {value!r}")
            if not 0 <= value < 1:
                raise PolicyError(f"ratio of group {name!r} is {value!r}; accepted: 0 <= ratio < 1")
            clean[name] = float(value)
        object.__setattr__(self, "ratios", MappingProxyType(clean))

    # -- mapping protocol --------------------------------------------------------------------------
    def __getitem__(self, name: str) -> float:
        return self.ratios[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.ratios)

    def __len__(self) -> int:
        return len(self.ratios)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Policy):
            return dict(self.ratios) == dict(other.ratios)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.ratios.items())))

    def __repr__(self) -> str:
        body = ", ".join(f"{k}: {v:.3f}" for k, v in self.ratios.items())
        return f"Policy({{{body}}})"

    def with_metadata(
        self, *, budget: Mapping[str, Any] | None = None, scores: Mapping[str, Any] | None = None
    ) -> Policy:
        """A copy carrying the budget and scores (kept if not given)."""
        return Policy(
            self.ratios,
            fingerprint=self.fingerprint,
            budget=self.budget if budget is None else dict(budget),
            scores=self.scores if scores is None else dict(scores),
        )

    def vector(self, names: tuple[str, ...]) -> list[float]:
        """Ratios in the given group order."""
        return [self.ratios[n] for n in names]

    # -- validation --------------------------------------------------------------------------------
    def validate(self, space: _Space, *, partial: bool = False) -> None:
        """Check the policy fits ``space``: same architecture, rounding and groups, ratios within bounds.

        Args:
            space: the search space of the model the policy is for.
            partial: allow groups of the space to be missing (they keep all their channels).

        Raises:
            PolicyError: naming the unknown or missing groups, the out-of-range ratios, or the
                granularity, architecture, channel count or rounding mismatch.
        """
        if self.fingerprint is not None:
            kind = self.fingerprint.get("granularity", "channel")
            if kind != space.granularity:
                raise PolicyError(
                    f"policy prunes {kind}s (granularity {kind!r}) but the space prunes {space.granularity}s: "
                    f"build the space with SearchSpace.from_model(..., granularity={kind!r})"
                )
            arch = self.fingerprint.get("architecture")
            if arch != space.architecture:
                raise PolicyError(
                    f"policy was made for architecture {arch!r}, not {space.architecture!r}"
                )
            theirs = dict(self.fingerprint.get("groups", {}))
            ours = space.fingerprint["groups"]
            changed = sorted(n for n in theirs.keys() & ours.keys() if theirs[n] != ours[n])
            if changed:
                detail = ", ".join(f"{n}: {theirs[n]} vs {ours[n]}" for n in changed)
                raise PolicyError(f"policy's channel counts differ from the model's (policy vs model): {detail}")
            _warn_of_unknown_groups(space, theirs)
            rounding = self.fingerprint.get("round_to", space.fingerprint["round_to"])
            if rounding != space.fingerprint["round_to"]:
                raise PolicyError(
                    f"policy was made with round_to={rounding}, the space uses round_to={space.fingerprint['round_to']}"
                )
        unknown = sorted(set(self.ratios) - set(space.names))
        missing = [] if partial else [n for n in space.names if n not in self.ratios]
        if unknown or missing:
            parts = []
            if unknown:
                parts.append(f"unknown groups {unknown}" + _head_hint(space, unknown))
            if missing:
                parts.append(f"missing groups {missing}")
            raise PolicyError(f"policy does not match the search space: {'; '.join(parts)}; "
                              f"the space's groups are {list(space.names)}")
        too_big = {n: r for n, r in self.ratios.items() if r > space[n].max_ratio + 1e-12}
        if too_big:
            detail = ", ".join(f"{n}={r:.4f} (max {space[n].max_ratio:.4f}{_heads_left(space[n], r)})"
                               for n, r in too_big.items())
            raise PolicyError(f"ratios above their group's max_ratio: {detail}")

    # -- JSON ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with the schema version."""
        return {
            "kind": _KIND,
            "schema_version": SCHEMA_VERSION,
            "ratios": dict(self.ratios),
            "fingerprint": None if self.fingerprint is None else dict(self.fingerprint),
            "budget": None if self.budget is None else dict(self.budget),
            "scores": None if self.scores is None else dict(self.scores),
        }

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "policy") -> Policy:
        """Inverse of :meth:`to_dict`; raises :class:`PolicyError` on anything malformed."""
        if not isinstance(data, dict) or data.get("kind") != _KIND:
            raise PolicyError(f"{source} is not an autoprune policy (expected a JSON object with kind={_KIND!r})")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise PolicyError(f"{source} has schema_version {version!r}; this autoprune reads {SCHEMA_VERSION}")
        fingerprint = data.get("fingerprint")
        if fingerprint is not None and (
            not isinstance(fingerprint, dict) or not isinstance(fingerprint.get("groups"), dict)
        ):
            raise PolicyError(f"{source} has a malformed fingerprint: {fingerprint!r}")
        return cls(
            data.get("ratios"),
            fingerprint=fingerprint,
            budget=data.get("budget"),
            scores=data.get("scores"),
        )

    def save(self, path: str | Path) -> Path:
        """Write the policy as JSON, atomically."""
        path = Path(path)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        """Read a policy written by :meth:`save`."""
        path = Path(path)
        try:
            data = read_json_file(path, what="policy file")
        except ConfigError as exc:  # missing, too large, not text, not JSON
            raise PolicyError(str(exc)) from None
        return cls.from_dict(data, source=f"policy file {str(path)!r}")


def _head_hint(space: _Space, unknown: list[str]) -> str:
    """A hint for names that point inside an attention module pruned by whole heads (a head cannot be split)."""
    heads = {g.name for g in space if getattr(g, "unit", "channel") == "head"}
    inside = sorted(n for n in unknown if n.rsplit(".", 1)[0] in heads)
    if not inside:
        return ""
    owners = sorted({n.rsplit(".", 1)[0] for n in inside})
    return (f" ({', '.join(inside)} {'is' if len(inside) == 1 else 'are'} inside attention modules pruned by whole "
            f"heads, which a policy cannot split: name {', '.join(repr(o) for o in owners)} with a fraction of "
            "its heads instead)")


def _heads_left(group: Any, ratio: float) -> str:
    """For a head group, how many heads a ratio would leave (a policy must leave at least one)."""
    if getattr(group, "unit", "channel") != "head":
        return ""
    return f": {group.kept_channels(min(ratio, 1.0))} of its {group.channels} heads would stay"


def _warn_of_unknown_groups(space: _Space, theirs: Mapping[str, Any]) -> None:
    """Warn when the model has channel groups the policy's fingerprint never knew: left out of its search
    (``ignore``, excluded), or a sign that the policy was made for another model of the same class (another
    depth) and fits this one only by name."""
    unknown = [n for n in space.names if n not in theirs]
    if unknown:
        log.warning("the policy was made on a space of %d channel groups; this %s has %d, and %d of them (%s) "
                    "keep all their channels. If the policy was made for another model (another depth or width "
                    "of %s), it does not fit this one: search again on this model.", len(theirs), space.architecture,
                    len(space.names), len(unknown), ", ".join(unknown[:5]) + (", ..." if len(unknown) > 5 else ""),
                    space.architecture.rsplit(".", 1)[-1])
