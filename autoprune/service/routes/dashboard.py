"""The web dashboard: its page at ``/`` (``public``: no token, it holds no data) and its data calls (``router``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from autoprune.service import dashboard
from autoprune.service.routes.deps import RunId, Store

#: The page, served without a token.
public = APIRouter()
#: The page's data calls, each with the user's token.
router = APIRouter()


@public.get("/", include_in_schema=False)
def page() -> HTMLResponse:
    """The dashboard page (static: every call it makes for data sends the token the user entered)."""
    return dashboard.page()


@router.get("/runs/{run_id}/charts")
def charts(run_id: RunId, store: Store) -> Response:
    """The run's report as data: its sections (title, note, and a Plotly figure, a table or text), drawn
    from the run directory so far (the dashboard's run page)."""
    return dashboard.run_charts(store.run_dir(run_id))


@router.get("/choices")
def choices() -> dict[str, Any]:
    """What a config may name on this server (models, datasets, searchers, executors, budget metrics) and
    the config's defaults (the dashboard's submit form)."""
    return dashboard.choices()
