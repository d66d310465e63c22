"""``autoprune serve`` in a subprocess on a free loopback port, ready once ``/health`` answers.

For tests, benchmarks and notebooks that need a real server::

    with LocalServer(tmp_path / "runs", token=TOKEN) as server:
        client = autoprune.Client(server.url, token=TOKEN)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from autoprune.service.auth import TOKEN_ENV
from autoprune.service.supervisor import package_path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LocalServer:
    """``python -m autoprune.cli.main serve`` on 127.0.0.1 with ``token``; its output goes to ``log_path``
    (``server-<port>.log`` beside the runs root).

    Args:
        runs_root: the server's runs root.
        *args: more ``autoprune serve`` flags (e.g. ``"--max-concurrent", "1"``).
        token: the server's ``AUTOPRUNE_TOKEN``: a token, or ``name=token,...`` (docs/service.md).
        env: extra environment variables of the server (and so of its drivers).
        timeout: seconds the server gets to come up.
    """

    def __init__(self, runs_root: Path, *args: str, token: str, env: Mapping[str, str] | None = None,
                 timeout: float = 300) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = runs_root.parent / f"server-{self.port}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("wb")
        environment = {**os.environ, **(env or {}), TOKEN_ENV: token, "PYTHONPATH": package_path()}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "autoprune.cli", "serve", "--port", str(self.port), "--runs-root", str(runs_root),
             *args], env=environment, stdout=self._log, stderr=subprocess.STDOUT)
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop(signal.SIGKILL)
                raise RuntimeError(f"autoprune serve did not come up on {self.url}:\n{self.log_path.read_text()}")
            time.sleep(0.3)

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Send ``sig`` and wait for the server to end (SIGTERM: executing runs are interrupted, resumable)."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(60)
        self._log.close()
