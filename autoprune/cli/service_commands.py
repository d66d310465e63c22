"""The service commands: serve searches over HTTP, submit one to a server, list and steer a server's runs."""

from __future__ import annotations

import argparse

from autoprune.cli.render import out, print_line, report_runs
from autoprune.service.client import Client
from autoprune.service.server import ServeOptions, serve
from search_spaces.ground.errors import ConfigError


def cmd_serve(args: argparse.Namespace) -> int:
    """``autoprune serve``: the HTTP API, until stopped."""
    options = ServeOptions(host=args.host, port=args.port, runs_root=args.runs_root, ray_address=args.ray_address,
                           max_concurrent=args.max_concurrent, allow_imports=args.allow_imports)
    serve(options, announce=print_line)
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    """``autoprune submit``: send a config; print the run id (and, with ``--wait``, how it ended)."""
    with Client(args.server) as client:
        run = client.submit(args.config)
        out.print(run.id)
        if args.wait:
            status = run.wait()
            out.print(f"{run.id}: {status}")
            return 0 if status == "done" else 1
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    """``autoprune runs``: list, show, cancel or resume runs on a server."""
    with Client(args.server) as client:
        if args.action == "list":
            report_runs(args.server, client.runs())
            return 0
        if args.id is None:
            raise ConfigError(f"autoprune runs {args.action} needs a run id")
        run = client.run(args.id)
        if args.action == "show":
            out.print_json(data=run.info())
        elif args.action == "cancel":
            out.print(f"{run.id}: {run.cancel()}")
        else:
            out.print(f"{run.id}: {run.resume(trials=args.trials)}")
    return 0
