"""A run's outputs: its finished trials (JSON, CSV or Parquet), its best policy, and the files of its directory."""

from __future__ import annotations

import io
from typing import Any

import pandas as pd
from fastapi import APIRouter
from fastapi.responses import FileResponse, Response

from autoprune.service.routes.deps import RunId, Store
from search_spaces.ground.errors import ConfigError

POLICY = "best_policy.json"

router = APIRouter()


@router.get("/runs/{run_id}/trials", response_model=None)
def trials(run_id: RunId, store: Store, format: str = "json") -> Response | list[dict[str, Any]]:
    """Finished trials: JSON rows (``?format=csv`` or ``?format=parquet`` for a table file)."""
    rows = store.trial_rows(run_id)
    if format == "json":
        return rows
    table = pd.DataFrame(rows)
    if format == "csv":
        return Response(table.to_csv(index=False), media_type="text/csv")
    if format == "parquet":
        buffer = io.BytesIO()
        table.to_parquet(buffer, index=False)
        return Response(buffer.getvalue(), media_type="application/vnd.apache.parquet")
    raise ConfigError(f"trials format {format!r} is not offered; accepted: json, csv, parquet")


@router.get("/runs/{run_id}/policy")
def policy(run_id: RunId, store: Store) -> FileResponse:
    """The best policy (JSON that ``autoprune.Policy`` loads); 404 until the run has written one."""
    return FileResponse(store.file(run_id, POLICY), media_type="application/json")


@router.get("/runs/{run_id}/files")
def files(run_id: RunId, store: Store) -> list[str]:
    """Names of the run's files (outputs, tables, plots) for ``/files/{name}``."""
    return store.files(run_id)


@router.get("/runs/{run_id}/files/{name:path}")
def file(run_id: RunId, name: str, store: Store) -> FileResponse:
    """One file of the run directory; no name reaches outside it."""
    return FileResponse(store.file(run_id, name))
