"""The HTTP API (FastAPI): runs, their trials, policy, files and charts, checkpoints, health; the web dashboard at
``/``. OpenAPI docs at ``/docs``."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pandas as pd
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse

from autoprune.builtins.models import MODELS
from autoprune.builtins.registry import registered
from autoprune.service import dashboard
from autoprune.service.auth import owner_of
from autoprune.service.checkpoints import check_state_dict, save_checkpoint
from autoprune.service.remote import (
    MAX_CONFIG_BYTES,
    UnsupportedMediaType,
    checked_config,
    checked_resume,
    parse_body,
)
from autoprune.service.store import FINISHED, NoSuchRunError, RunStateError, RunStore
from autoprune.service.supervisor import Supervisor
from search_spaces.ground.errors import AutopruneError, ConfigError, unknown_name

#: Largest checkpoint upload (a state dict).
MAX_UPLOAD_BYTES = 1 << 30
POLICY = "best_policy.json"


@dataclass(frozen=True)
class ServerSettings:
    """What ``autoprune serve`` was started with (besides host and port)."""

    tokens: dict[str, str]
    allow_imports: bool = False
    ray_address: str | None = None
    max_upload_bytes: int = MAX_UPLOAD_BYTES


def create_app(store: RunStore, supervisor: Supervisor, settings: ServerSettings) -> FastAPI:
    """The API over ``store``; runs execute under ``supervisor``."""
    app = FastAPI(title="autoprune", description="Budgeted channel-pruning searches as a service.",
                  version="1")

    def owner(request: Request) -> str:
        found = owner_of(request.headers.get("authorization"), settings.tokens)
        if found is None:
            raise HTTPException(401, "missing or wrong bearer token (Authorization: Bearer ...)",
                                headers={"WWW-Authenticate": "Bearer"})
        return found

    @app.exception_handler(AutopruneError)
    async def bad_input(_: Request, exc: AutopruneError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=415 if isinstance(exc, UnsupportedMediaType) else 400)

    @app.exception_handler(NoSuchRunError)
    async def not_found(_: Request, exc: NoSuchRunError) -> JSONResponse:
        return JSONResponse({"detail": str(exc.args[0])}, status_code=404)

    @app.exception_handler(RunStateError)
    async def conflict(_: Request, exc: RunStateError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.get("/health")
    def health() -> dict[str, Any]:
        """Liveness (no token needed)."""
        jobs = store.all()
        return {"status": "ok", "runs": len(jobs), "running": sum(j["status"] == "running" for j in jobs)}

    @app.post("/runs", status_code=201)
    async def submit(request: Request, who: str = Depends(owner)) -> dict[str, str]:
        """Queue a search: the body is the config ``autoprune search`` reads (JSON, or YAML with
        ``Content-Type: application/yaml``). A bad config gets 400 and creates nothing."""
        body = await _limited_body(request, MAX_CONFIG_BYTES)
        data = parse_body(body, request.headers.get("content-type"))
        config = await run_in_threadpool(  # may build the model to check names: not on the event loop
            checked_config, data, checkpoints=store.checkpoints, allow_imports=settings.allow_imports,
            ray_address=settings.ray_address)
        job = store.create(config, owner=who)
        supervisor.wake()
        return {"id": job["id"]}

    @app.get("/runs")
    def list_runs(_: str = Depends(owner)) -> list[dict[str, Any]]:
        """Every run: id, status, progress, best accuracy so far, budget, searcher, created, owner."""
        briefs = []
        for job in store.all():
            try:
                briefs.append(_brief(store, job))
            except NoSuchRunError:  # deleted while the list was built
                continue
        return briefs

    @app.get("/runs/{run_id}")
    def show(run_id: str, _: str = Depends(owner)) -> dict[str, Any]:
        """One run: its status, config, progress and (once written) summary."""
        job = store.get(run_id)
        return {**_brief(store, job), "config": job["config"], "message": job["message"],
                "exit_code": job["exit_code"], "summary": store.summary(run_id)}

    @app.get("/runs/{run_id}/events")
    async def events(run_id: str, _: str = Depends(owner)) -> StreamingResponse:
        """Server-sent events: the run's brief record whenever it changes, until it has finished."""
        store.get(run_id)
        return StreamingResponse(_events(store, run_id), media_type="text/event-stream")

    @app.get("/runs/{run_id}/trials", response_model=None)
    def trials(run_id: str, format: str = "json", _: str = Depends(owner)) -> Response | list[dict[str, Any]]:
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

    @app.get("/runs/{run_id}/policy")
    def policy(run_id: str, _: str = Depends(owner)) -> FileResponse:
        """The best policy (JSON that ``autoprune.Policy`` loads); 404 until the run has written one."""
        return FileResponse(store.file(run_id, POLICY), media_type="application/json")

    @app.get("/runs/{run_id}/files")
    def files(run_id: str, _: str = Depends(owner)) -> list[str]:
        """Names of the run's files (outputs, tables, plots) for ``/files/{name}``."""
        return store.files(run_id)

    @app.get("/runs/{run_id}/files/{name:path}")
    def file(run_id: str, name: str, _: str = Depends(owner)) -> FileResponse:
        """One file of the run directory; no name reaches outside it."""
        return FileResponse(store.file(run_id, name))

    @app.get("/runs/{run_id}/charts")
    def charts(run_id: str, _: str = Depends(owner)) -> Response:
        """The run's report as data: its sections (title, note, and a Plotly figure, a table or text), drawn
        from the run directory so far (the dashboard's run page)."""
        return dashboard.run_charts(store.run_dir(run_id))

    @app.get("/choices")
    def choices(_: str = Depends(owner)) -> dict[str, Any]:
        """What a config may name on this server (models, datasets, searchers, executors, budget metrics) and
        the config's defaults (the dashboard's submit form)."""
        return dashboard.choices()

    @app.post("/runs/{run_id}/cancel")
    def cancel(run_id: str, _: str = Depends(owner)) -> dict[str, Any]:
        """Cancel a queued or running search (a running one is stopped and stays resumable)."""
        def cancelled(job: dict[str, Any]) -> dict[str, Any]:
            if job["status"] == "queued":
                return {"status": "cancelled", "cancel_requested": True}
            if job["status"] == "running":
                return {"cancel_requested": True}
            raise RunStateError(f"run {run_id!r} is {job['status']}; only queued or running runs can be cancelled")

        job = store.change(run_id, cancelled)
        supervisor.wake()
        return _brief(store, job)

    @app.post("/runs/{run_id}/resume")
    async def resume(run_id: str, request: Request, _: str = Depends(owner)) -> dict[str, Any]:
        """Queue a finished run again: an interrupted, failed or cancelled one goes on to its trials;
        ``{"trials": N}`` raises the total (a done run needs more trials than it has)."""
        body = await _limited_body(request, 4096)
        data = parse_body(body, "application/json", what='the resume body ({"trials": N})') if body.strip() else {}

        def queued(job: dict[str, Any]) -> dict[str, Any]:
            if job["status"] not in FINISHED:
                raise RunStateError(f"run {run_id!r} is {job['status']}; only a finished run can be resumed")
            trials = checked_resume(data, run_id=run_id, status=job["status"], trials=job["trials"])
            return {"status": "queued", "trials": trials, "cancel_requested": False, "queued_at": time.time_ns()}

        job = store.change(run_id, queued)
        supervisor.wake()
        return _brief(store, job)

    @app.delete("/runs/{run_id}", status_code=204)
    def delete(run_id: str, _: str = Depends(owner)) -> Response:
        """Remove a run that is not running, with its files."""
        store.delete(run_id)
        return Response(status_code=204)

    @app.post("/checkpoints", status_code=201)
    async def upload(request: Request, model: str, _: str = Depends(owner)) -> dict[str, str]:
        """Upload trained weights of a model the server knows (a state dict saved with ``torch.save``; body
        ``application/octet-stream``). Stored by content; a config names it with ``checkpoint: <id>``."""
        if model not in MODELS and model not in registered("autoprune.models"):
            raise unknown_name("model", model, [*MODELS, *registered("autoprune.models")])
        body = await _limited_body(request, settings.max_upload_bytes)
        await run_in_threadpool(check_state_dict, body, model)  # loading and hashing: not on the event loop
        digest = await run_in_threadpool(save_checkpoint, store.checkpoints, body, model)
        return {"id": digest, "model": model}

    dashboard.mount(app)
    return app


def _brief(store: RunStore, job: dict[str, Any]) -> dict[str, Any]:
    config = job["config"]
    return {"id": job["id"], "status": job["status"], "progress": store.progress(job["id"]),
            "budget": config.get("budget"), "searcher": config.get("searcher"), "model": config.get("model"),
            "dataset": config.get("dataset"), "created": job["created"], "owner": job["owner"]}


async def _events(store: RunStore, run_id: str) -> AsyncIterator[str]:
    last = None
    while True:
        try:
            brief = _brief(store, store.get(run_id))
        except NoSuchRunError:
            return
        if brief != last:
            yield f"data: {json.dumps(brief)}\n\n"
            last = brief
        if brief["status"] in FINISHED:
            return
        await asyncio.sleep(0.5)


async def _limited_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 past ``limit`` bytes (checked while reading, not after)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"the request body is {int(declared):,} bytes; at most {limit:,} are accepted")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"the request body is over the {limit:,} bytes accepted")
        chunks.append(chunk)
    return b"".join(chunks)
