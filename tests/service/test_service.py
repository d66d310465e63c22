"""autoprune serve end to end: a real server in a subprocess on a free port, driven through autoprune.Client."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from served import BOB, CAROL, ROOT, TINY, TOKEN, serve

import autoprune as ap
from autoprune.cli.main import main
from autoprune.composition.config import SearchConfig
from autoprune.service.auth import TOKEN_FILE, load_tokens, owner_of, parse_tokens
from autoprune.service.local import LocalServer
from autoprune.service.remote import checked_config
from autoprune.service.store import RunStore
from search_spaces.ground.errors import ConfigError


@pytest.fixture()
def runs_root(tmp_path: Path) -> Path:
    return tmp_path / "runs"


@pytest.fixture()
def server(runs_root: Path) -> Iterator[LocalServer]:
    started = serve(runs_root, "--max-concurrent", "1")
    yield started
    started.stop()


def _wait(run: ap.Run, statuses: tuple[str, ...], timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while (info := run.info())["status"] not in statuses:
        assert time.monotonic() < deadline, f"{run} stayed {info['status']}: {info['message']}"
        time.sleep(0.3)
    return info


def _driver_pid(runs_root: Path, run_id: str, timeout: float = 60) -> int:
    """The driver's pid, once the supervisor has recorded it (a run is marked running just before it starts)."""
    deadline = time.monotonic() + timeout
    while (pid := json.loads((runs_root / run_id / "job.json").read_text())["pid"]) is None:
        assert time.monotonic() < deadline, f"run {run_id} recorded no driver pid in {timeout} s"
        time.sleep(0.1)
    return pid


def _proc_status(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:  # gone between the two checks
        return "zombie"


@pytest.mark.slow  # three tiny searches, one killed and resumed (~1 min)
def test_submit_queue_results_cancel_crash_and_bad_requests(server: LocalServer, runs_root: Path,
                                                            tmp_path: Path) -> None:
    client = ap.Client(server.url, token=TOKEN)
    first, second = client.submit(TINY), client.submit({**TINY, "seed": 1})
    yaml_config = tmp_path / "third.yaml"
    yaml_config.write_text("model: small_cnn\ntrials: 2\nevaluator: {bn_batches: 1, finetune_steps: 0}\n")
    third = client.submit(yaml_config)
    assert third.cancel() == "cancelled"  # still queued: --max-concurrent 1
    listed = {run["id"]: run for run in client.runs()}
    assert set(listed) == {first.id, second.id, third.id}
    assert listed[first.id]["owner"] == "default" and listed[first.id]["searcher"] == "random"
    assert listed[first.id]["budget"] == {"metric": "params", "fraction": 0.6, "absolute": None}

    assert first.wait(timeout=240, progress=False) == "done"
    _wait(second, ("running",))
    os.kill(_driver_pid(runs_root, second.id), signal.SIGKILL)  # a crash / OOM kill
    crashed = _wait(second, ("failed", "done"))
    assert crashed["status"] == "failed" and "SIGKILL" in crashed["message"], crashed
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"
    jobs = {run_id: json.loads((runs_root / run_id / "job.json").read_text()) for run_id in (first.id, second.id)}
    assert jobs[first.id]["finished"] <= jobs[second.id]["started"]  # the queue: one at a time, in order
    assert third.status() == "cancelled" and not (runs_root / third.id / "run").exists()

    policy = first.policy()
    assert isinstance(policy, ap.Policy) and policy.budget["fraction"] == 0.6
    trials = first.trials()
    assert sorted(trials["trial_id"]) == [0, 1]
    downloaded = first.download(tmp_path / "download")
    assert ap.Policy.load(downloaded / "best_policy.json") == policy
    assert (downloaded / "model" / "pruned_state_dict.pt").is_file() and (downloaded / "summary.json").is_file()
    csv = client.request("GET", f"/runs/{first.id}/trials", params={"format": "csv"}).text
    assert csv.startswith("trial_id,") and len(csv.splitlines()) == 3
    with httpx.stream("GET", f"{server.url}/runs/{first.id}/events", headers={"Authorization": f"Bearer {TOKEN}"},
                      timeout=30) as stream:  # server-sent events end with the finished run
        events = [json.loads(line[len("data: "):]) for line in stream.iter_lines() if line.startswith("data: ")]
    assert events[-1]["status"] == "done" and events[-1]["progress"]["completed"] == 2
    summary = first.info()["summary"]
    assert summary["trials"] == 2 and summary["pruned"]["params_ratio"] <= 0.6

    for name in ("..%2F..%2F.token", "%2Fetc%2Fpasswd", "..%2Fjob.json", ".lock", "model%2F..%2F..%2Fjob.json"):
        response = httpx.get(f"{server.url}/runs/{first.id}/files/{name}", headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code in (400, 404) and TOKEN not in response.text and "owner" not in response.text, name

    assert second.resume() == "queued"
    assert second.wait(timeout=240, progress=False) == "done"
    assert sorted(second.trials()["trial_id"]) == [0, 1]

    with pytest.raises(ap.ServiceError, match="400 .* is done with 2 trials; resume it with more trials"):
        first.resume()
    assert first.resume(trials=3) == "queued"
    assert first.wait(timeout=240, progress=False) == "done"
    assert sorted(first.trials()["trial_id"]) == [0, 1, 2] and first.info()["summary"]["trials"] == 3
    first.delete()
    assert first.id not in {run["id"] for run in client.runs()} and not (runs_root / first.id).exists()


@pytest.mark.slow  # starts a server (~10 s)
def test_auth_and_bad_configs_create_nothing(server: LocalServer, runs_root: Path) -> None:
    assert httpx.get(f"{server.url}/health").status_code == 200
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": TOKEN}):
        for method, path in (("GET", "/runs"), ("POST", "/runs"), ("GET", "/runs/x/policy"), ("DELETE", "/runs/x")):
            assert httpx.request(method, server.url + path, headers=headers).status_code == 401, (headers, path)
    assert httpx.get(f"{server.url}/openapi.json").status_code == 200  # the docs describe the API
    client = ap.Client(server.url, token=TOKEN)
    bad = [
        ({**TINY, "trials": 0}, "'trials' must be an integer >= 1, got 0"),
        ({**TINY, "model": "resnet1000"}, "unknown model 'resnet1000'"),
        ({**TINY, "model": "factories:tiny_model"}, "import strings from a request are refused"),
        ({**TINY, "searcher": "os:system"}, "import strings from a request are refused"),
        ({**TINY, "trials": 10**7}, "trials must be at most 10,000 on this server, got 10000000"),
        ({**TINY, "evaluator": {"finetune_steps": 10**9}}, "finetune_steps must be at most 100,000"),
        ({**TINY, "run_dir": "/tmp/elsewhere"}, "'run_dir' ('/tmp/elsewhere') is chosen by the server"),
        ({**TINY, "checkpoint": "/etc/passwd"}, "must be the id (sha256) of a checkpoint uploaded"),
        ({**TINY, "executor": "ray", "executor_options": {"address": "ray://evil:10001"}}, "chosen by the server"),
        ({**TINY, "budget": {"flops": 2}}, "fraction must be in (0, 1]"),
        ({**TINY, "budget": "half"}, "a budget must be a mapping like {'flops': 0.5}, got 'half'"),
        ({**TINY, "trials": -3}, "'trials' must be an integer >= 1, got -3"),
        ({**TINY, "trials": "many"}, "'trials' must be an integer >= 1, got 'many'"),
        ({**TINY, "searcher": "nope"}, "unknown searcher 'nope'; accepted: amc,"),
        ({**TINY, "dataset": "imagenet"}, "unknown dataset 'imagenet'"),
        ({**TINY, "trails": 5}, "unknown entries of the submitted config ['trails']"),
    ]
    for config, message in bad:
        with pytest.raises(ap.ServiceError) as refused:
            client.submit(config)
        assert refused.value.status_code == 400 and message in str(refused.value), (config, str(refused.value))
    raw = [  # bodies no config mapping can be read from: (body, content type, status, message)
        (b"trials: [", "application/yaml", 400, "not valid YAML"),
        (b"{\"trials\": 2", "application/json", 400, "not valid JSON"),
        (b"[1, 2]", "application/json", 400, "the config must be a mapping, got list"),
        (b"\xff\xfe", "application/json", 400, "not valid JSON"),
        (b"model = 'small_cnn'", "text/x-toml", 415, "Content-Type 'text/x-toml' is not accepted"),
        (b"x" * (3 << 20), "application/json", 413, "at most 1,048,576 are accepted"),
    ]
    for body, content_type, status, message in raw:
        response = client._http.post("/runs", content=body, headers={"Content-Type": content_type})
        assert response.status_code == status and message in response.json()["detail"], (body[:20], response.text)
    assert client.runs() == [] and [p.name for p in runs_root.iterdir() if not p.name.startswith(".")] == []


@pytest.mark.slow  # starts a server (~10 s)
def test_runs_belong_to_who_submitted_them(server: LocalServer) -> None:
    mine = ap.Client(server.url, token=TOKEN).submit(TINY)
    bobs = ap.Client(server.url, token=BOB).submit(TINY)
    assert [run["id"] for run in ap.Client(server.url, token=BOB).runs()] == [bobs.id]  # bob sees his own
    assert {run["id"]: run["owner"] for run in ap.Client(server.url, token=CAROL).runs()} == {
        mine.id: "default", bobs.id: "bob"}  # an admin sees all
    assert bobs.info()["owner"] == "bob"
    for action in ("info", "cancel", "delete"):
        with pytest.raises(ap.ServiceError, match="403 run .* belongs to another owner"):
            getattr(ap.Client(server.url, token=BOB).run(mine.id), action)()
    assert ap.Client(server.url, token=CAROL).run(bobs.id).cancel() == "cancelled"
    assert mine.cancel() in ("running", "cancelled")


@pytest.mark.slow  # a search killed with its server, listed again by a new server and resumed (~1 min)
def test_a_sigkilled_server_leaves_an_interrupted_run_that_resumes_with_every_trial_once(runs_root: Path) -> None:
    first = serve(runs_root, "--max-concurrent", "1")
    client = ap.Client(first.url, token=TOKEN)
    long = client.submit({**TINY, "trials": 24, "evaluator": {"bn_batches": 1, "finetune_steps": 10}})
    waiting = client.submit(TINY)
    assert waiting.cancel() == "cancelled"
    deadline = time.monotonic() + 240
    while long.info()["progress"]["completed"] < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    driver = _driver_pid(runs_root, long.id)
    first.stop(signal.SIGKILL)
    deadline = time.monotonic() + 30  # the kernel ends the driver with its server (PDEATHSIG)
    while Path(f"/proc/{driver}").exists() and "zombie" not in _proc_status(driver):
        assert time.monotonic() < deadline, f"driver {driver} outlived its server by 30 s"
        time.sleep(0.2)

    second = serve(runs_root, "--max-concurrent", "1")
    try:
        client = ap.Client(second.url, token=TOKEN)
        runs = {run["id"]: run for run in client.runs()}
        assert runs[waiting.id]["status"] == "cancelled"
        assert runs[long.id]["status"] == "interrupted" and 2 <= runs[long.id]["progress"]["completed"] < 24
        again = client.run(long.id)
        assert "resume" in again.info()["message"]
        assert again.resume() == "queued"
        assert again.wait(timeout=400, progress=False) == "done"
        assert sorted(again.trials()["trial_id"]) == list(range(24))
        assert isinstance(again.policy(), ap.Policy)
    finally:
        second.stop()


def test_a_non_loopback_bind_needs_a_token(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("AUTOPRUNE_TOKEN", raising=False)
    assert main(["serve", "--host", "0.0.0.0", "--runs-root", str(tmp_path / "runs")]) == 2
    assert "refusing to serve on the non-loopback address '0.0.0.0' without a token" in capsys.readouterr().err
    assert not (tmp_path / "runs" / TOKEN_FILE).exists()


def test_a_token_is_created_once_with_mode_0600(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("AUTOPRUNE_TOKEN", raising=False)
    tokens, created = load_tokens(tmp_path, host="127.0.0.1")
    assert created is not None and tokens == {created: "default"}
    assert (tmp_path / TOKEN_FILE).stat().st_mode & 0o777 == 0o600
    assert load_tokens(tmp_path, host="0.0.0.0") == (tokens, None)  # a token exists now: shown no more
    monkeypatch.setenv("AUTOPRUNE_TOKEN", "alice=aaaaaaaaaaaaaaaaaaaa,bob=bbbbbbbbbbbbbbbbbbbb")
    tokens, created = load_tokens(tmp_path, host="0.0.0.0")
    assert created is None and owner_of("Bearer bbbbbbbbbbbbbbbbbbbb", tokens) == "bob"
    assert owner_of("Bearer aaaaaaaaaaaaaaaaaaab", tokens) is None and owner_of(None, tokens) is None
    assert owner_of("Basic aaaaaaaaaaaaaaaaaaaa", tokens) is None
    with pytest.raises(ConfigError, match="at least 16 characters"):
        parse_tokens("short")


def test_import_strings_need_allow_imports(tmp_path) -> None:
    config = {**TINY, "model": "factories:tiny_model"}
    with pytest.raises(ConfigError, match="--allow-imports"):
        checked_config(config, checkpoints=tmp_path, allow_imports=False, ray_address=None)
    assert checked_config(config, checkpoints=tmp_path, allow_imports=True, ray_address=None).model == config["model"]
    ray = {**TINY, "executor": "ray", "executor_options": {"cpus_per_trial": 1}}
    assert checked_config(ray, checkpoints=tmp_path, allow_imports=False,
                          ray_address="auto").executor_options.address == "auto"


class _Evil:
    def __reduce__(self):  # what a crafted checkpoint would do on an unsafe load
        return (os.system, ("touch /tmp/autoprune-pwned",))


@pytest.mark.slow  # one tiny search from uploaded weights (~30 s)
def test_uploaded_checkpoints_are_checked_stored_by_content_and_named_by_configs(server: LocalServer, tmp_path) -> None:
    import hashlib

    import torch

    from autoprune.builtins.models import resnet20, small_cnn

    client = ap.Client(server.url, token=TOKEN)
    evil, other, good = tmp_path / "evil.pt", tmp_path / "resnet20.pt", tmp_path / "small_cnn.pt"
    torch.save({"weight": _Evil()}, evil)
    torch.save(resnet20(in_channels=1).state_dict(), other)
    torch.save(small_cnn(in_channels=1).state_dict(), good)
    with pytest.raises(ap.ServiceError, match="400 .*weights_only=True"):
        client.upload_checkpoint(evil, model="small_cnn")
    assert not Path("/tmp/autoprune-pwned").exists()
    with pytest.raises(ap.ServiceError, match="400 the upload does not fit model 'small_cnn'"):
        client.upload_checkpoint(other, model="small_cnn")
    with pytest.raises(ap.ServiceError, match="400 unknown model 'vgg99'"):
        client.upload_checkpoint(good, model="vgg99")
    checkpoint = client.upload_checkpoint(good, model="small_cnn")
    assert checkpoint == hashlib.sha256(good.read_bytes()).hexdigest()
    assert client.upload_checkpoint(good, model="small_cnn") == checkpoint  # same content, same id
    run = client.submit({**TINY, "checkpoint": checkpoint})
    assert run.wait(timeout=240, progress=False) == "done"
    assert run.info()["config"]["checkpoint"].endswith(f"checkpoints/{checkpoint}.pt")


def test_the_documented_launch_figures_are_the_measured_ones() -> None:
    measured = json.loads((ROOT / "bench" / "results" / "service_launch.json").read_text())
    text = (ROOT / "docs" / "service.md").read_text()
    for key, unit in (("driver_median_s", "s"), ("ray_job_median_s", "s"), ("ray_start_s", "s"),
                      ("ray_idle_rss_mb", "MB")):
        figure = f"{measured[key]:.1f} s" if unit == "s" else f"{measured[key]:.0f} MB"
        assert f"**{figure}**" in text, (key, figure)


def test_the_dashboard_page_its_assets_and_its_data_calls(tmp_path, finished_run) -> None:
    from fastapi.testclient import TestClient

    from autoprune.composition.config import SearchConfig
    from autoprune.service.app import ServerSettings, create_app
    from autoprune.service.store import RunStore
    from autoprune.service.supervisor import Supervisor

    store = RunStore(tmp_path / "runs")
    try:
        client = TestClient(create_app(store, Supervisor(store), ServerSettings(tokens={TOKEN: "default"})))
        page = client.get("/")  # no token: the page holds no data
        assert page.status_code == 200 and '<script src="/assets/dashboard.js"></script>' in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"] and "<script>" not in page.text
        assert client.get("/assets/plotly-basic.min.js").status_code == 200
        assert client.get("/assets/dashboard.js").headers["content-type"].startswith("text/javascript")
        for path in ("/choices", "/runs/x/charts"):
            assert client.get(path).status_code == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        choices = client.get("/choices", headers=auth).json()
        assert {"small_cnn", "resnet20"} <= set(choices["models"]) and "sensitivity" in choices["searchers"]
        assert choices["budgets"] == ["flops", "params", "nonzeros", "size", "latency"]
        assert choices["executors"] == ["local", "ray"] and choices["granularities"] == ["channel", "element"]
        assert choices["defaults"]["trials"] == SearchConfig().trials

        queued = store.create(SearchConfig(), owner="default")["id"]
        assert client.get(f"/runs/{queued}/charts", headers=auth).json() == {
            "sections": [], "note": "the search has not started writing its run directory"}
        store.run_dir(queued).symlink_to(finished_run, target_is_directory=True)
        charts = client.get(f"/runs/{queued}/charts", headers=auth).json()
        sections = {s["key"]: s for s in charts["sections"]}
        assert list(sections) == ["comparison", "speed", "kept", "pareto", "progress", "wall-time", "time",
                                  "sensitivity", "latency", "config"]
        assert [row[0] for row in sections["speed"]["table"]["rows"]] == ["eager"]  # the dashboard's speed table
        assert {k for k, s in sections.items() if s["figure"]} == {"kept", "pareto", "progress", "wall-time", "time",
                                                                   "sensitivity"}
        assert sections["comparison"]["table"]["header"] == ["", "baseline", "pruned", "pruned / baseline"]
        trials = client.get(f"/runs/{queued}/trials", headers=auth).json()
        pareto = [t for t in sections["pareto"]["figure"]["data"] if t["name"] in ("within budget", "over budget")]
        assert sum(len(t["x"]) for t in pareto) == len(trials) == 10
        assert client.get("/runs/nope/charts", headers=auth).status_code == 404
    finally:
        store.close()


def test_status_polling_reads_a_trial_log_again_only_when_it_changed(tmp_path, monkeypatch) -> None:
    store = RunStore(tmp_path / "runs")
    try:
        finetuned = {**TINY, "evaluator": {**TINY["evaluator"], "finetune_steps": 2}}
        run_id = store.create(SearchConfig.from_dict(finetuned), owner="alice")["id"]
        reads: list[str] = []
        original = store.trial_rows
        monkeypatch.setattr(store, "trial_rows", lambda rid: reads.append(rid) or original(rid))
        assert store.progress(run_id) == {"completed": 0, "total": 2, "best_accuracy": None}
        log = store.run_dir(run_id) / "trials.jsonl"
        log.parent.mkdir(parents=True)
        row = {"status": "ok", "feasible": True, "accuracy": 0.5, "fidelity": 2}
        screened = {**row, "accuracy": 0.9, "fidelity": 0}  # a screen (or an early rung) is never the best
        log.write_text(json.dumps({"trial": row}) + "\n" + json.dumps({"trial": screened}) + "\n")
        for _ in range(3):
            assert store.progress(run_id) == {"completed": 2, "total": 2, "best_accuracy": 0.5}
        assert len(reads) == 1  # polled three times, read once
        with log.open("a") as out:  # a second trial, then half of a third being written
            out.write(json.dumps({"trial": {**row, "accuracy": 0.75}}) + "\n" + '{"trial": {"sta')
        assert store.progress(run_id) == {"completed": 3, "total": 2, "best_accuracy": 0.75} and len(reads) == 2
    finally:
        store.close()


def test_a_relative_runs_root_gives_runs_absolute_paths(tmp_path, monkeypatch) -> None:
    from autoprune.composition.config import SearchConfig
    from autoprune.service.store import SEARCH_CONFIG, RunStore

    monkeypatch.chdir(tmp_path)
    store = RunStore("runs")  # `autoprune serve`'s default; the drivers run with their run directory as cwd
    try:
        run_id = store.create(SearchConfig(), owner="default")["id"]
        document = json.loads((store.directory(run_id) / SEARCH_CONFIG).read_text())
        assert store.root == tmp_path.resolve() / "runs"
        assert Path(document["run_dir"]) == tmp_path.resolve() / "runs" / run_id / "run"
    finally:
        store.close()
