"""The service commands: serve searches over HTTP, submit one to a server, list, show, fetch and steer a server's runs.

``submit`` and ``runs`` find the server the way ``autoprune serve`` starts by default: ``--server``, else
``$AUTOPRUNE_SERVER``, else http://127.0.0.1:8765; the token is ``$AUTOPRUNE_TOKEN``, else the file ``serve``
writes on its first start (``runs/.token`` under the default runs root; ``--token-file`` names another).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from urllib.parse import urlsplit

from autoprune.cli.connection import DEFAULT_SERVER, DEFAULT_TOKEN_FILE, SERVER_ENV
from autoprune.cli.console import out, print_line
from autoprune.cli.render import report_runs
from autoprune.cli.run_tables import result_table, run_table
from autoprune.service.auth import TOKEN_ENV, TOKEN_FILE, first_token, is_loopback
from autoprune.service.client import Client, Run
from autoprune.service.server import ServeOptions, serve
from search_spaces.ground.errors import ConfigError


def cmd_serve(args: argparse.Namespace) -> int:
    """``autoprune serve``: the HTTP API, until stopped."""
    options = ServeOptions(host=args.host, port=args.port, runs_root=args.runs_root, ray_address=args.ray_address,
                           max_concurrent=args.max_concurrent, allow_imports=args.allow_imports)
    serve(options, announce=print_line)
    return 0


def server_url(args: argparse.Namespace) -> str:
    """``--server``, else ``$AUTOPRUNE_SERVER``, else where ``autoprune serve`` listens by default."""
    return args.server or os.environ.get(SERVER_ENV) or DEFAULT_SERVER


def client_token(args: argparse.Namespace) -> str | None:
    """``$AUTOPRUNE_TOKEN`` (None: the client reads it), else the first token of ``--token-file``, else of the
    default ``runs/.token`` (written by ``autoprune serve`` on its first start) when the server is on this machine,
    else None (the server will say 401). The local server's token is never sent to another host unasked."""
    if os.environ.get(TOKEN_ENV):
        return None
    if not args.token_file and not is_loopback(urlsplit(server_url(args)).hostname or ""):
        return None
    path = Path(args.token_file or DEFAULT_TOKEN_FILE)
    if not path.is_file():
        if args.token_file:
            raise ConfigError(f"--token-file {args.token_file!r} does not exist; give the file autoprune serve wrote "
                              f"(RUNS_ROOT/{TOKEN_FILE}) or set {TOKEN_ENV}")
        return None
    return first_token(path.read_text(encoding="utf-8"))


def _client(args: argparse.Namespace) -> Client:
    return Client(server_url(args), token=client_token(args))


def cmd_submit(args: argparse.Namespace) -> int:
    """``autoprune submit``: send a config; print the run id (and, with ``--wait``, how it ended: its record and
    baseline vs pruned)."""
    with _client(args) as client:
        run = client.submit(args.config)
        print_line(run.id, to=out)
        if args.wait:
            status = run.wait()
            _show(run.info())
            return 0 if status == "done" else 1
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    """``autoprune runs``: list the runs; show, cancel, resume one; fetch its policy, file names or files."""
    server = server_url(args)
    with _client(args) as client:
        if args.action == "list":
            report_runs(server, client.runs())
            return 0
        if args.id is None:
            raise ConfigError(f"autoprune runs {args.action} needs a run id (autoprune runs lists them)")
        run = client.run(args.id)
        if args.action == "show":
            info = run.info()
            if args.json:
                out.print_json(data=info)
            else:
                _show(info)
        elif args.action == "policy":
            _policy(run, args.out)
        elif args.action == "files":
            for name in client.request("GET", f"/runs/{run.id}/files").json():
                print_line(str(name), to=out)
        elif args.action == "download":
            target = run.download(args.out or run.id)
            count = sum(1 for path in target.rglob("*") if path.is_file())
            print_line(f"{count} files of run {run.id} in {target}", to=out)
        elif args.action == "cancel":
            print_line(f"{run.id}: {run.cancel()}", to=out)
        else:
            print_line(f"{run.id}: {run.resume(trials=args.trials)}", to=out)
    return 0


def _show(info: dict) -> None:
    """A run's record as a short table, and baseline vs pruned once it has them."""
    out.print(run_table(info))
    if isinstance(info.get("summary"), dict):
        out.print(result_table(info["summary"]))


def _policy(run: Run, path: str | None) -> None:
    """The run's best policy: written to ``path`` (for ``autoprune apply``), else printed as JSON."""
    policy = run.policy()
    if path is None:
        out.print_json(json.dumps(policy.to_dict()))
        return
    print_line(f"policy of run {run.id}: {policy.save(path)}", to=out)
