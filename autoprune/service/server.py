"""``autoprune serve``: the runs root, the token, the supervisor and the API under uvicorn."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from autoprune.service.app import ServerSettings, create_app
from autoprune.service.auth import TOKEN_FILE, load_admins, load_tokens
from autoprune.service.store import RunStore
from autoprune.service.supervisor import Supervisor
from search_spaces.ground.errors import ConfigError
from search_spaces.ground.options import check_int

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeOptions:
    """How ``autoprune serve`` runs (its flags)."""

    host: str = "127.0.0.1"
    port: int = 8765
    runs_root: str = "runs"
    ray_address: str | None = None
    max_concurrent: int = 1
    allow_imports: bool = False

    def __post_init__(self) -> None:
        check_int("--max-concurrent", self.max_concurrent, low=1)
        check_int("--port", self.port, low=0)
        if self.port > 65535:
            raise ConfigError(f"--port must be at most 65535, got {self.port}")


def serve(options: ServeOptions, *, announce: Callable[[str], None]) -> None:
    """Serve until interrupted; on the way out, executing runs are interrupted (resumable).

    ``announce`` is shown a token created on this start (once) and where the server listens.
    """
    root = Path(options.runs_root)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"--runs-root {str(root)!r} is a file; name a directory (created if missing)")
    tokens, created = load_tokens(root, host=options.host)
    store = RunStore(root)
    supervisor = Supervisor(store, max_concurrent=options.max_concurrent, allow_imports=options.allow_imports)
    settings = ServerSettings(tokens=tokens, admins=load_admins(root), allow_imports=options.allow_imports,
                              ray_address=options.ray_address)
    app = create_app(store, supervisor, settings)
    if created is not None:
        announce(f"new API token (saved in {root / TOKEN_FILE}, shown only now): {created}")
    supervisor.start()
    try:
        announce(f"autoprune serving {root.resolve()} on http://{options.host}:{options.port} (docs: /docs)")
        uvicorn.run(app, host=options.host, port=options.port, log_level="warning")
    finally:
        supervisor.stop()
        store.close()
