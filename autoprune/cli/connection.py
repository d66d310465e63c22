"""Where ``serve`` listens by default and how ``submit`` and ``runs`` find it (light: the parser's help uses it)."""

from __future__ import annotations

from pathlib import Path

from autoprune.service.auth import TOKEN_ENV, TOKEN_FILE

DEFAULT_HOST, DEFAULT_PORT, DEFAULT_RUNS_ROOT = "127.0.0.1", 8765, "runs"
SERVER_ENV = "AUTOPRUNE_SERVER"
DEFAULT_SERVER = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}"
DEFAULT_TOKEN_FILE = str(Path(DEFAULT_RUNS_ROOT) / TOKEN_FILE)
#: ``autoprune runs`` actions that need a run id
ON_A_RUN = ("show", "cancel", "resume", "policy", "files", "download")
#: how submit and runs find the server and its token
CONNECTION = (f"The server: --server, else ${SERVER_ENV}, else {DEFAULT_SERVER}; the token: ${TOKEN_ENV}, else "
              f"--token-file (default {DEFAULT_TOKEN_FILE}, written by autoprune serve on its first start; sent only "
              "to a server on this machine).")
