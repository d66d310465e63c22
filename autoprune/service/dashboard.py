"""The web dashboard at ``/``: a static page and its scripts from package data, and what its data calls return.

The page holds no data, so it is served without a token; every call it makes for data sends the token the user
entered (kept in the browser's ``sessionStorage``). A run's charts are the report's own sections
(:func:`autoprune.report.run_record.report_sections`), sent as JSON and drawn by the same plotly.js.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

from autoprune.builtins.data import DATASETS
from autoprune.builtins.models import MODELS
from autoprune.builtins.registry import SEARCHERS, registered
from autoprune.composition.config import SearchConfig
from autoprune.executors import EXECUTORS
from autoprune.prune.export import FORMATS
from autoprune.report.page import asset, embed_json
from autoprune.report.run_record import RunRecord, report_sections
from autoprune.study import rundir as rd
from search_spaces.budget import KINDS
from search_spaces.groups import GRANULARITIES
from search_spaces.runtimes import RUNTIMES

PAGE = "dashboard.html"
# Scripts and styles only from this server (no inline script can run, whatever a run's data holds); plotly.js
# adds style elements and draws PNG downloads from data: URLs.
PAGE_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
               "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'")


def page() -> HTMLResponse:
    """The page (static: no data in it), with headers that let only this server's scripts run."""
    return HTMLResponse(asset(PAGE), headers={"Content-Security-Policy": PAGE_POLICY,
                                              "X-Content-Type-Options": "nosniff"})


def assets() -> StaticFiles:
    """The package's assets (plotly.js, scripts, styles), for the app to mount under ``/assets``."""
    return StaticFiles(packages=[("autoprune", "assets")])


def choices() -> dict[str, Any]:
    """What the submit form offers: the names this server accepts, and the config's defaults."""
    return {
        "models": [*MODELS, *registered("autoprune.models")],
        "datasets": [*DATASETS, *registered("autoprune.datasets")],
        "searchers": [*SEARCHERS, *registered("autoprune.searchers")],
        "executors": list(EXECUTORS),
        "budgets": list(KINDS),
        "granularities": list(GRANULARITIES),
        "runtimes": list(RUNTIMES),
        "formats": [f for f in FORMATS if f != "sparse"],
        "defaults": SearchConfig().to_dict(),
    }


def run_charts(run_dir: Path) -> Response:
    """The report's sections of the run in ``run_dir`` as JSON (no sections before the search has written its
    ``config.json``)."""
    if not (run_dir / rd.CONFIG).is_file():
        payload: dict[str, Any] = {"sections": [], "note": "the search has not started writing its run directory"}
    else:
        payload = {"sections": [asdict(s) for s in report_sections(RunRecord.read(run_dir))], "note": ""}
    return Response(embed_json(payload), media_type="application/json")
