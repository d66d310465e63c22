"""``autoprune.Client``: submit searches to an ``autoprune serve`` and fetch their results over HTTP."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from autoprune.service.auth import TOKEN_ENV, first_token
from search_spaces.ground.errors import AutopruneError, ConfigError
from search_spaces.policy import Policy

FINISHED = ("done", "failed", "cancelled", "interrupted")


class ServiceError(AutopruneError):
    """The server refused a request or could not be reached; the message is the server's."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class Client:
    """A connection to an autoprune server.

    Args:
        url: the server, e.g. ``http://127.0.0.1:8765``.
        token: the bearer token (default: ``AUTOPRUNE_TOKEN``).
        timeout: seconds per request.
    """

    def __init__(self, url: str, *, token: str | None = None, timeout: float = 30.0) -> None:
        if token is None and os.environ.get(TOKEN_ENV):
            token = first_token(os.environ[TOKEN_ENV])
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request; an error status becomes a :class:`ServiceError` with the server's message."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ServiceError(f"cannot reach {self._http.base_url}: {exc}") from exc
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise ServiceError(f"{method} {path}: {response.status_code} {detail}", response.status_code)
        return response

    def submit(self, config: Mapping[str, Any] | str | Path) -> Run:
        """Queue a search: a config mapping, or the path of a YAML/JSON config file."""
        if isinstance(config, (str, Path)):
            path = Path(config)
            if not path.is_file():
                raise ConfigError(f"config file {str(path)!r} does not exist")
            response = self.request("POST", "/runs", content=path.read_bytes(),
                                    headers={"Content-Type": "application/yaml"})
        else:
            response = self.request("POST", "/runs", json=dict(config))
        return Run(self, response.json()["id"])

    def runs(self) -> list[dict[str, Any]]:
        """Every run on the server (brief records)."""
        return self.request("GET", "/runs").json()

    def run(self, run_id: str) -> Run:
        return Run(self, run_id)

    def upload_checkpoint(self, path: str | Path, *, model: str) -> str:
        """Upload a state dict file for ``model``; returns the id a config names as ``checkpoint``."""
        response = self.request("POST", "/checkpoints", params={"model": model}, content=Path(path).read_bytes(),
                                headers={"Content-Type": "application/octet-stream"})
        return response.json()["id"]


class Run:
    """One search on the server."""

    def __init__(self, client: Client, run_id: str) -> None:
        self.client, self.id = client, run_id

    def __repr__(self) -> str:
        return f"Run({self.id!r})"

    def info(self) -> dict[str, Any]:
        """The full record: status, config, progress, summary."""
        return self.client.request("GET", f"/runs/{self.id}").json()

    def status(self) -> str:
        """queued, running, done, failed, cancelled or interrupted."""
        return self.info()["status"]

    def wait(self, *, timeout: float | None = None, poll: float = 1.0, progress: bool = True) -> str:
        """Wait until the run has finished and return its status (a progress bar on stderr with ``progress``)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with Progress(TextColumn(f"[bold]{self.id}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TextColumn("{task.fields[info]}"), disable=not progress, transient=True) as bar:
            task = bar.add_task("search", total=None, info="")
            while True:
                info = self.info()
                done = info["progress"]
                best = "-" if done["best_accuracy"] is None else f"{done['best_accuracy']:.4f}"
                bar.update(task, completed=done["completed"], total=done["total"],
                           info=f"{info['status']} · best feasible acc {best}")
                if info["status"] in FINISHED:
                    return info["status"]
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"run {self.id} is still {info['status']} after {timeout} s")
                time.sleep(poll)

    def trials(self) -> pd.DataFrame:
        """The finished trials, one row each."""
        return pd.DataFrame(self.client.request("GET", f"/runs/{self.id}/trials").json())

    def policy(self) -> Policy:
        """The best policy (once the run has written one)."""
        data = self.client.request("GET", f"/runs/{self.id}/policy").json()
        return Policy.from_dict(data, source=f"the policy of run {self.id}")

    def download(self, directory: str | Path) -> Path:
        """Copy the run's files (policy, pruned model, summary, tables, plots) into ``directory``."""
        target = Path(directory)
        for name in self.client.request("GET", f"/runs/{self.id}/files").json():
            path = (target / name).resolve()
            if not path.is_relative_to(target.resolve()):
                raise ServiceError(f"the server named a file outside the download directory: {name!r}")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(self.client.request("GET", f"/runs/{self.id}/files/{name}").content)
        return target

    def cancel(self) -> str:
        """Cancel the run; returns its status now (``running`` until the driver has stopped)."""
        return self.client.request("POST", f"/runs/{self.id}/cancel").json()["status"]

    def resume(self, *, trials: int | None = None) -> str:
        """Queue the run again (to its trials, or to ``trials`` in total)."""
        body = {} if trials is None else {"trials": trials}
        return self.client.request("POST", f"/runs/{self.id}/resume", json=body).json()["status"]

    def delete(self) -> None:
        self.client.request("DELETE", f"/runs/{self.id}")
