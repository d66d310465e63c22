"""How the service's errors become responses: bad input 400 (an unsupported media type 415), no such run 404, a
run in the wrong state for the request or with damaged records 409; each with its message as ``detail``."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.responses import Response

from autoprune.service.remote import UnsupportedMediaType
from autoprune.service.store import DamagedRunError, NoSuchRunError, RunStateError
from search_spaces.ground.errors import AutopruneError


async def bad_input(_: Request, exc: AutopruneError) -> JSONResponse:
    """400 for a bad config or request (415 for a body of a media type not read)."""
    return JSONResponse({"detail": str(exc)}, status_code=415 if isinstance(exc, UnsupportedMediaType) else 400)


async def not_found(_: Request, exc: NoSuchRunError) -> JSONResponse:
    """404 for a run that does not exist (or a file it does not have)."""
    return JSONResponse({"detail": str(exc.args[0])}, status_code=404)


async def conflict(_: Request, exc: RunStateError | DamagedRunError) -> JSONResponse:
    """409 for a run in the wrong state (cancelling a finished one, deleting a running one, ...) or one whose
    records cannot be read."""
    return JSONResponse({"detail": str(exc)}, status_code=409)


#: The handlers ``FastAPI(exception_handlers=...)`` takes.
HANDLERS: dict[int | type[Exception], Callable[[Request, Any], Coroutine[Any, Any, Response]]] = {
    AutopruneError: bad_input,
    NoSuchRunError: not_found,
    RunStateError: conflict,
    DamagedRunError: conflict,
}
