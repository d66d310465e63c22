"""Options of the Ray Tune executor, as a plain value: a config can hold them without importing Ray."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from search_spaces.ground.options import check_int, check_number, from_mapping


@dataclass(frozen=True)
class RayOptions:
    """How evaluations run as Ray Tune trials.

    Args:
        address: None starts a local Ray sized to this machine and shuts it down afterwards; ``auto`` or
            ``ray://host:10001`` joins a running cluster.
        cpus_per_trial: CPUs reserved per trial (fractions allowed); also torch's thread count (>= 1).
        gpus_per_trial: GPUs reserved per trial (fractions allowed).
        max_concurrent: cap on trials running at once (None: as many as the cluster's resources allow).
        max_failures: retries of a trial whose worker died (Ray Tune's ``FailureConfig``).
        storage_path: where Ray Tune keeps its results (default: ``<run_dir>/ray`` or a temporary dir).
        dashboard: start Ray's dashboard with an embedded local Ray.
        dashboard_host: interface the dashboard binds to (default ``127.0.0.1``).
    """

    address: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int | None = None
    max_failures: int = 2
    storage_path: str | None = None
    dashboard: bool = False
    dashboard_host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        check_number("cpus_per_trial", self.cpus_per_trial, low=0, inclusive=False)
        check_number("gpus_per_trial", self.gpus_per_trial, low=0)
        check_int("max_failures", self.max_failures, low=0)
        if self.max_concurrent is not None:
            check_int("max_concurrent", self.max_concurrent, low=1)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | RayOptions | None) -> RayOptions:
        """From a mapping of the fields (unknown keys refused), an instance as given, or the defaults."""
        return from_mapping(cls, data, what="ray executor options")
