"""``/runs``: submit a search, list and show runs, follow one (server-sent events), cancel, resume, delete.

A run is seen and changed by its owner (the name of the token that submitted it) and by admins only; a run
whose records cannot be read is listed as damaged, with why."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse

from autoprune.service.remote import MAX_CONFIG_BYTES, checked_config, checked_resume, parse_body
from autoprune.service.routes.deps import Owner, RunId, Runs, Settings, Store, Who, limited_body
from autoprune.service.store import FINISHED, DamagedRunError, NoSuchRunError, RunStateError, RunStore

#: Largest resume body (``{"trials": N}``).
MAX_RESUME_BYTES = 4096

router = APIRouter()


@router.post("/runs", status_code=201)
async def submit(request: Request, who: Owner, store: Store, supervisor: Runs, settings: Settings) -> dict[str, str]:
    """Queue a search: the body is the config ``autoprune search`` reads (JSON, or YAML with
    ``Content-Type: application/yaml``). A bad config gets 400 and creates nothing."""
    body = await limited_body(request, MAX_CONFIG_BYTES)
    data = parse_body(body, request.headers.get("content-type"))
    config = await run_in_threadpool(  # may build the model to check names: not on the event loop
        checked_config, data, checkpoints=store.checkpoints, allow_imports=settings.allow_imports,
        ray_address=settings.ray_address)
    job = store.create(config, owner=who)
    supervisor.wake()
    return {"id": job["id"]}


@router.get("/runs")
def list_runs(store: Store, who: Who) -> list[dict[str, Any]]:
    """Every run the token may see (its owner's; every run for an admin): id, status, progress, best accuracy
    so far, budget, searcher, created, owner, and ``damaged`` (why its records cannot be read, else None)."""
    briefs = []
    for job in store.all():
        if not who.may_access(job["owner"]):
            continue
        try:
            briefs.append(_brief(store, job))
        except NoSuchRunError:  # deleted while the list was built
            continue
    briefs += [_damaged_brief(record) for record in store.damaged() if who.may_access(record["owner"])]
    return sorted(briefs, key=lambda brief: brief["id"])


@router.get("/runs/{run_id}")
def show(run_id: RunId, store: Store) -> dict[str, Any]:
    """One run: its status, config, progress and (once written) summary."""
    job = store.get(run_id)
    brief = _brief(store, job)
    try:
        summary = store.summary(run_id)
    except DamagedRunError as exc:
        summary, brief["damaged"] = None, brief["damaged"] or str(exc)
    return {**brief, "config": job["config"], "message": job["message"], "exit_code": job["exit_code"],
            "summary": summary}


@router.get("/runs/{run_id}/events")
async def events(run_id: RunId, store: Store) -> StreamingResponse:
    """Server-sent events: the run's brief record whenever it changes, until it has finished."""
    store.get(run_id)
    return StreamingResponse(_changes(store, run_id), media_type="text/event-stream")


@router.post("/runs/{run_id}/cancel")
def cancel(run_id: RunId, store: Store, supervisor: Runs) -> dict[str, Any]:
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


@router.post("/runs/{run_id}/resume")
async def resume(run_id: RunId, request: Request, store: Store, supervisor: Runs) -> dict[str, Any]:
    """Queue a finished run again: an interrupted, failed or cancelled one goes on to its trials;
    ``{"trials": N}`` raises the total (a done run needs more trials than it has)."""
    body = await limited_body(request, MAX_RESUME_BYTES)
    data = parse_body(body, "application/json", what='the resume body ({"trials": N})') if body.strip() else {}

    def queued(job: dict[str, Any]) -> dict[str, Any]:
        if job["status"] not in FINISHED:
            raise RunStateError(f"run {run_id!r} is {job['status']}; only a finished run can be resumed")
        trials = checked_resume(data, run_id=run_id, status=job["status"], trials=job["trials"])
        return {"status": "queued", "trials": trials, "cancel_requested": False, "queued_at": time.time_ns()}

    job = store.change(run_id, queued)
    supervisor.wake()
    return _brief(store, job)


@router.delete("/runs/{run_id}", status_code=204)
def delete(run_id: RunId, store: Store) -> Response:
    """Remove a run that is not running, with its files."""
    store.delete(run_id)
    return Response(status_code=204)


def _brief(store: RunStore, job: dict[str, Any]) -> dict[str, Any]:
    """A run's brief record: id, status, progress, budget, searcher, model, dataset, created, owner, and why its
    trial log cannot be read (``damaged``; None when it can)."""
    config = job["config"]
    try:
        progress, damaged = store.progress(job["id"]), None
    except DamagedRunError as exc:
        progress, damaged = {"completed": 0, "total": job["trials"], "best_accuracy": None}, str(exc)
    return {"id": job["id"], "status": job["status"], "progress": progress,
            "budget": config.get("budget"), "searcher": config.get("searcher"), "model": config.get("model"),
            "dataset": config.get("dataset"), "created": job["created"], "owner": job["owner"], "damaged": damaged}


def _damaged_brief(record: dict[str, Any]) -> dict[str, Any]:
    """The brief record of a run whose ``job.json`` cannot be read: its id, owner if known, and why."""
    return {"id": record["id"], "status": "damaged", "progress": {"completed": 0, "total": 0, "best_accuracy": None},
            "budget": None, "searcher": None, "model": None, "dataset": None, "created": None,
            "owner": record["owner"], "damaged": record["why"]}


async def _changes(store: RunStore, run_id: str) -> AsyncIterator[str]:
    """The run's brief record as an event whenever it changes, until it has finished or is gone."""
    last = None
    while True:
        try:
            record = _brief(store, store.get(run_id))
        except NoSuchRunError:
            return
        if record != last:
            yield f"data: {json.dumps(record)}\n\n"
            last = record
        if record["status"] in FINISHED:
            return
        await asyncio.sleep(0.5)
