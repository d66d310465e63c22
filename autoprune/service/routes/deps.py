"""What the routes depend on: the server's settings, store and supervisor (kept on ``app.state`` by
:func:`~autoprune.service.app.create_app`), the owner of the request's bearer token (and whether it may touch the
run a path names), and a body read up to a limit."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from autoprune.service.auth import Caller, owner_of
from autoprune.service.store import RunStore
from autoprune.service.supervisor import Supervisor

#: Largest checkpoint upload (a state dict).
MAX_UPLOAD_BYTES = 1 << 30
#: Bytes the uploads being read and checked at once may hold together (each holds its body and its tensors).
MAX_UPLOAD_MEMORY = 2 * MAX_UPLOAD_BYTES


@dataclass(frozen=True)
class ServerSettings:
    """What ``autoprune serve`` was started with (besides host and port)."""

    tokens: dict[str, str]
    admins: frozenset[str] = frozenset()
    allow_imports: bool = False
    ray_address: str | None = None
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    max_upload_memory: int = MAX_UPLOAD_MEMORY


class UploadMemory:
    """The bytes uploads in flight hold, all together; past the ceiling an upload is refused with 503."""

    def __init__(self, ceiling: int) -> None:
        self.ceiling = ceiling
        self._held = 0
        self._lock = threading.Lock()  # taken from the event loop and from the thread pool

    @contextmanager
    def reservation(self) -> Iterator[Callable[[int], None]]:
        """A function that takes more bytes for one upload (503 past the ceiling); all given back on exit."""
        taken = 0

        def take(size: int) -> None:
            nonlocal taken
            with self._lock:
                if self._held + size > self.ceiling:
                    raise HTTPException(503, f"the server holds {self._held:,} bytes of uploads being checked; "
                                             f"{size:,} more would pass its ceiling of {self.ceiling:,}; retry "
                                             "later", headers={"Retry-After": "10"})
                self._held += size
            taken += size

        try:
            yield take
        finally:
            with self._lock:
                self._held -= taken


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


def get_uploads(request: Request) -> UploadMemory:
    """The memory the server's uploads in flight hold."""
    uploads: UploadMemory = request.app.state.uploads
    return uploads


Uploads = Annotated[UploadMemory, Depends(get_uploads)]


def owner(request: Request, settings: Settings) -> str:
    """Who the request's bearer token belongs to; 401 without a known token."""
    found = owner_of(request.headers.get("authorization"), settings.tokens)
    if found is None:
        raise HTTPException(401, "missing or wrong bearer token (Authorization: Bearer ...)",
                            headers={"WWW-Authenticate": "Bearer"})
    return found


Owner = Annotated[str, Depends(owner)]


def caller(who: Owner, settings: Settings) -> Caller:
    """The request's caller: its token's owner, and whether that owner is an admin."""
    admin = who in settings.admins
    return Caller(who, admin=admin, reaches_unowned=admin or not settings.admins)


Who = Annotated[Caller, Depends(caller)]


def accessible_run(run_id: str, who: Who, store: Store) -> str:
    """The path's run id, once the caller may see and change that run (its owner, or an admin): 403 otherwise,
    404 without such a run."""
    owner = store.owner(run_id)
    if not who.may_access(owner):
        if owner is None:
            raise HTTPException(403, f"run {run_id!r} is damaged and names no owner; only an admin token may see or "
                                     "delete it")
        raise HTTPException(403, f"run {run_id!r} belongs to another owner; only its owner or an admin token may "
                                 "see or change it")
    return run_id


RunId = Annotated[str, Depends(accessible_run)]


async def limited_body(request: Request, limit: int, *, take: Callable[[int], None] | None = None) -> bytes:
    """The request body, refused with 413 past ``limit`` bytes (checked while reading, not after); ``take`` is
    told the size of every chunk before it is kept (it raises to refuse)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"the request body is {int(declared):,} bytes; at most {limit:,} are accepted")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"the request body is over the {limit:,} bytes accepted")
        if take is not None:
            take(len(chunk))
        chunks.append(chunk)
    return b"".join(chunks)
