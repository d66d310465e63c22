"""What the routes depend on: the server's settings, store and supervisor (kept on ``app.state`` by
:func:`~autoprune.service.app.create_app`), the owner of the request's bearer token, and a body read up to a limit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from autoprune.service.auth import owner_of
from autoprune.service.store import RunStore
from autoprune.service.supervisor import Supervisor

#: Largest checkpoint upload (a state dict).
MAX_UPLOAD_BYTES = 1 << 30


@dataclass(frozen=True)
class ServerSettings:
    """What ``autoprune serve`` was started with (besides host and port)."""

    tokens: dict[str, str]
    allow_imports: bool = False
    ray_address: str | None = None
    max_upload_bytes: int = MAX_UPLOAD_BYTES


def get_settings(request: Request) -> ServerSettings:
    """The settings the app was created with."""
    settings: ServerSettings = request.app.state.settings
    return settings


def get_store(request: Request) -> RunStore:
    """The store of runs the app serves."""
    store: RunStore = request.app.state.store
    return store


def get_supervisor(request: Request) -> Supervisor:
    """The supervisor that executes the queued runs."""
    supervisor: Supervisor = request.app.state.supervisor
    return supervisor


Settings = Annotated[ServerSettings, Depends(get_settings)]
Store = Annotated[RunStore, Depends(get_store)]
Runs = Annotated[Supervisor, Depends(get_supervisor)]


def owner(request: Request, settings: Settings) -> str:
    """Who the request's bearer token belongs to; 401 without a known token."""
    found = owner_of(request.headers.get("authorization"), settings.tokens)
    if found is None:
        raise HTTPException(401, "missing or wrong bearer token (Authorization: Bearer ...)",
                            headers={"WWW-Authenticate": "Bearer"})
    return found


Owner = Annotated[str, Depends(owner)]


async def limited_body(request: Request, limit: int) -> bytes:
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
