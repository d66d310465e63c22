"""The HTTP API (FastAPI): runs, their trials, policy, files and charts, checkpoints, health; the web dashboard at
``/``. OpenAPI docs at ``/docs``.

:func:`create_app` only composes: the store, supervisor and settings on ``app.state`` (read by the dependencies in
:mod:`autoprune.service.routes.deps`), the routers of :mod:`autoprune.service.routes` (every one but the health
check and the page behind the bearer token), the error handlers of :mod:`autoprune.service.errors`, the assets.
"""

from __future__ import annotations

from fastapi import Depends, FastAPI

from autoprune.service import dashboard
from autoprune.service.errors import HANDLERS
from autoprune.service.routes import checkpoints, files, health, runs
from autoprune.service.routes import dashboard as dashboard_routes
from autoprune.service.routes.deps import MAX_UPLOAD_BYTES, ServerSettings, UploadMemory, owner
from autoprune.service.store import RunStore
from autoprune.service.supervisor import Supervisor

__all__ = ["MAX_UPLOAD_BYTES", "ServerSettings", "create_app"]

#: Routers open to anyone: liveness and the dashboard page (which holds no data).
PUBLIC = (health.router, dashboard_routes.public)
#: Routers whose every route needs a known bearer token.
PRIVATE = (runs.router, files.router, dashboard_routes.router, checkpoints.router)


def create_app(store: RunStore, supervisor: Supervisor, settings: ServerSettings) -> FastAPI:
    """The API over ``store``; runs execute under ``supervisor``."""
    app = FastAPI(title="autoprune", description="Budgeted channel-pruning searches as a service.",
                  version="1", exception_handlers=HANDLERS)
    app.state.store = store
    app.state.supervisor = supervisor
    app.state.settings = settings
    app.state.uploads = UploadMemory(settings.max_upload_memory)
    for router in PUBLIC:
        app.include_router(router)
    for router in PRIVATE:
        app.include_router(router, dependencies=[Depends(owner)])
    app.mount("/assets", dashboard.assets(), name="assets")
    return app
