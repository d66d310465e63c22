"""The service from the command line: ``submit --wait`` prints the result, ``runs show`` a short table (``--json``
the record), ``runs policy|files|download`` fetch what a run wrote; the server and token default to what
``autoprune serve`` starts with. Against a real server in a subprocess (tests/served.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from served import TINY, TOKEN, serve

import autoprune as ap
from autoprune.cli.main import build_parser, main
from autoprune.cli.service_commands import DEFAULT_SERVER, SERVER_ENV, client_token, server_url
from autoprune.service.auth import TOKEN_ENV, TOKEN_FILE
from autoprune.service.local import LocalServer
from search_spaces.ground.errors import ConfigError


def test_the_server_and_token_default_to_what_serve_starts_with(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(SERVER_ENV, raising=False)
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    args = build_parser().parse_args(["runs"])
    assert server_url(args) == DEFAULT_SERVER == "http://127.0.0.1:8765"  # serve's default --host and --port
    assert client_token(args) is None  # no token anywhere: the server answers 401 and says so
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / TOKEN_FILE).write_text(TOKEN + "\n")  # what serve writes under its default runs root
    assert client_token(args) == TOKEN
    monkeypatch.setenv(SERVER_ENV, "http://elsewhere:1234")
    assert server_url(args) == "http://elsewhere:1234"
    assert client_token(args) is None  # the local server's token file is not sent to another host
    given = build_parser().parse_args(["runs", "--token-file", str(tmp_path / "runs" / TOKEN_FILE)])
    assert client_token(given) == TOKEN  # unless named
    assert server_url(build_parser().parse_args(["runs", "--server", "http://given:1"])) == "http://given:1"
    monkeypatch.setenv(TOKEN_ENV, "from-the-environment-0123")
    assert client_token(args) is None  # the client reads $AUTOPRUNE_TOKEN itself
    monkeypatch.delenv(TOKEN_ENV)
    with pytest.raises(ConfigError, match="--token-file 'nowhere' does not exist"):
        client_token(build_parser().parse_args(["runs", "--token-file", "nowhere"]))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    started = serve(tmp_path_factory.mktemp("service-cli") / "runs")
    yield started
    started.stop()


@pytest.fixture()
def connected(server: LocalServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory whose runs/.token holds the server's token, and $AUTOPRUNE_SERVER naming it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    monkeypatch.setenv(SERVER_ENV, server.url)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / TOKEN_FILE).write_text(TOKEN + "\n")
    return tmp_path


@pytest.mark.slow  # a server and a tiny search (~1 min)
def test_submit_wait_then_show_policy_files_and_download(connected: Path, server: LocalServer, capsys) -> None:
    config = connected / "tiny.yaml"
    config.write_text(json.dumps(TINY))  # JSON is YAML
    assert main(["submit", str(config), "--wait"]) == 0
    shown = capsys.readouterr().out
    run_id = shown.splitlines()[0].strip()
    assert "done" in shown and "small_cnn on digits" in shown and "baseline vs pruned (test set)" in shown
    record = ap.Client(server.url, token=TOKEN).run(run_id).info()
    assert f"{record['summary']['pruned']['params']:,}" in shown  # the result table, from summary.json

    assert main(["runs", "show", run_id]) == 0
    table = capsys.readouterr().out
    assert "2 of 2 finished" in table and "exported" in table and len(table.splitlines()) < 40
    assert main(["runs", "show", run_id, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["summary"] == record["summary"]

    policy = ap.Client(server.url, token=TOKEN).run(run_id).policy()
    assert main(["runs", "policy", run_id]) == 0
    assert ap.Policy.from_dict(json.loads(capsys.readouterr().out)) == policy
    assert main(["runs", "policy", run_id, "--out", "best.json"]) == 0
    assert "best.json" in capsys.readouterr().out and ap.Policy.load(connected / "best.json") == policy

    assert main(["runs", "files", run_id]) == 0
    names = capsys.readouterr().out.split()
    assert {"best_policy.json", "summary.json", "report.html"} <= set(names)
    assert main(["runs", "download", run_id]) == 0
    assert f"files of run {run_id} in {run_id}" in capsys.readouterr().out
    assert all((connected / run_id / name).is_file() for name in names)

    assert main(["runs", "policy"]) == 2
    assert "autoprune runs policy needs a run id" in capsys.readouterr().err
