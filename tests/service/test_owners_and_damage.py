"""Owners own their runs (admins see all), and one damaged record never takes the service down: in process,
through the app's routes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from served import BOB, TINY, TOKEN

from autoprune.composition.config import SearchConfig
from autoprune.service.app import ServerSettings, create_app
from autoprune.service.auth import parse_admins, parse_tokens
from autoprune.service.store import JOB, RunStore
from autoprune.service.supervisor import Supervisor

CAROL = "carols-token-0123456789abcdef"
TOKENS = f"{TOKEN},bob={BOB},carol:admin={CAROL}"


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _app(store: RunStore) -> TestClient:
    settings = ServerSettings(tokens=parse_tokens(TOKENS), admins=parse_admins(TOKENS))
    return TestClient(create_app(store, Supervisor(store), settings))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "runs"


@pytest.fixture
def client(root: Path) -> Iterator[TestClient]:
    store = RunStore(root)
    try:
        yield _app(store)
    finally:
        store.close()


def test_tokens_name_owners_and_admins() -> None:
    assert parse_tokens(TOKENS) == {TOKEN: "default", BOB: "bob", CAROL: "carol"}
    assert parse_admins(TOKENS) == {"carol"} and parse_admins(TOKEN) == frozenset()


def test_a_run_is_seen_and_changed_by_its_owner_and_admins_only(client) -> None:
    mine = client.post("/runs", json=TINY, headers=_auth(TOKEN)).json()["id"]
    bobs = client.post("/runs", json=TINY, headers=_auth(BOB)).json()["id"]
    listed = {token: [run["id"] for run in client.get("/runs", headers=_auth(token)).json()]
              for token in (TOKEN, BOB, CAROL)}
    assert listed == {TOKEN: [mine], BOB: [bobs], CAROL: sorted([mine, bobs])}
    for method, path in (("GET", ""), ("GET", "/events"), ("GET", "/trials"), ("GET", "/policy"), ("GET", "/files"),
                         ("GET", "/files/summary.json"), ("GET", "/charts"), ("POST", "/cancel"),
                         ("POST", "/resume"), ("DELETE", "")):
        refused = client.request(method, f"/runs/{mine}{path}", headers=_auth(BOB))
        assert refused.status_code == 403, (method, path, refused.text)
        assert "belongs to another owner" in refused.json()["detail"] and "default" not in refused.json()["detail"]
    assert client.get(f"/runs/{mine}", headers=_auth(TOKEN)).json()["owner"] == "default"
    assert client.get(f"/runs/{mine}", headers=_auth(CAROL)).status_code == 200  # an admin sees every run
    assert client.post(f"/runs/{bobs}/cancel", headers=_auth(CAROL)).json()["status"] == "cancelled"
    assert client.delete(f"/runs/{bobs}", headers=_auth(CAROL)).status_code == 204
    assert client.post(f"/runs/{mine}/cancel", headers=_auth(TOKEN)).json()["status"] == "cancelled"
    assert client.get("/runs/20200101-000000-abcdef", headers=_auth(BOB)).status_code == 404


def _runs(root: Path, count: int) -> list[str]:
    store = RunStore(root)
    try:
        return [store.create(SearchConfig.from_dict(TINY), owner="default")["id"] for _ in range(count)]
    finally:
        store.close()


def test_a_damaged_trial_log_is_listed_as_such_and_the_other_runs_work(client, root) -> None:
    store = client.app.state.store
    good, nul, high, bare = (store.create(SearchConfig.from_dict(TINY), owner="default")["id"] for _ in range(4))
    row = json.dumps({"trial": {"status": "ok", "feasible": True, "accuracy": 0.5}})
    no_accuracy = json.dumps({"trial": {"status": "ok", "feasible": True}})
    for run_id, line in ((good, row), (nul, row[:10] + "\x00" + row[10:]), (high, None), (bare, no_accuracy)):
        store.run_dir(run_id).mkdir(parents=True)
        data = line.encode() if line is not None else row.encode()[:5] + b"\xff" + row.encode()[5:]
        (store.run_dir(run_id) / "trials.jsonl").write_bytes(data + b"\n")
    listed = client.get("/runs", headers=_auth(TOKEN))
    assert listed.status_code == 200, listed.text
    runs = {run["id"]: run for run in listed.json()}
    assert runs[good]["damaged"] is None and runs[good]["progress"]["best_accuracy"] == 0.5
    assert "a finished trial without a numeric accuracy (got None)" in runs[bare]["damaged"]
    for run_id in (nul, high, bare):
        assert runs[run_id]["status"] == "queued" and "line 1 of its trial log" in runs[run_id]["damaged"]
        assert "trials.jsonl" in runs[run_id]["damaged"]
        assert client.get(f"/runs/{run_id}", headers=_auth(TOKEN)).json()["damaged"] == runs[run_id]["damaged"]
        trials = client.get(f"/runs/{run_id}/trials", headers=_auth(TOKEN))
        assert trials.status_code == 409 and "trials.jsonl" in trials.json()["detail"]
    assert client.get(f"/runs/{good}/trials", headers=_auth(TOKEN)).json() == [json.loads(row)["trial"]]


@pytest.mark.parametrize(("change", "why"), [
    (lambda job: {k: v for k, v in job.items() if k != "cancel_requested"}, "cancel_requested: Field required"),
    (lambda job: {**job, "config": None}, "config: Input should be a valid dictionary"),
    (lambda job: "[" * 100_000 + "]" * 100_000, "nested too deeply"),
    (lambda job: json.dumps(job).replace('"trials": 2', '"trials": ' + "9" * 5001), "out of range"),
    (lambda job: {**job, "status": "exploded"}, "status: Input should be"),
], ids=["missing-key", "config-null", "nested-100k", "huge-int", "bad-status"])
def test_a_damaged_job_record_is_listed_and_the_server_still_starts(root, change, why) -> None:
    good, bad = _runs(root, 2)
    for run_id in (good, bad):  # both executing when the last server was killed
        job = {**json.loads((root / run_id / JOB).read_text()), "status": "running"}
        (root / run_id / JOB).write_text(json.dumps(job))
    changed = change(job)
    (root / bad / JOB).write_text(changed if isinstance(changed, str) else json.dumps(changed))
    store = RunStore(root)  # a restart
    supervisor = Supervisor(store)
    try:
        supervisor.start()  # what `autoprune serve` does first
        client = _app(store)
        listed = client.get("/runs", headers=_auth(CAROL))  # an admin: an unreadable record names no owner
        assert listed.status_code == 200, listed.text
        runs = {run["id"]: run for run in listed.json()}
        assert good in {run["id"] for run in client.get("/runs", headers=_auth(TOKEN)).json()}
        assert runs[good]["status"] == "interrupted" and runs[good]["damaged"] is None
        assert runs[bad]["status"] == "damaged" and why in runs[bad]["damaged"], runs[bad]
        assert str(root / bad / JOB) in runs[bad]["damaged"]
        shown = client.get(f"/runs/{bad}", headers=_auth(CAROL))
        assert shown.status_code == 409 and why in shown.json()["detail"]
        assert client.get(f"/runs/{good}", headers=_auth(TOKEN)).status_code == 200
        assert client.delete(f"/runs/{bad}", headers=_auth(CAROL)).status_code == 204  # an admin removes it
        assert not (root / bad).exists() and [r["id"] for r in client.get("/runs", headers=_auth(CAROL)).json()] == [
            good]
    finally:
        supervisor.stop()
        store.close()


def test_a_damaged_record_naming_no_owner_is_reachable_on_a_server_without_admins(root) -> None:
    """With one token and no admin (the default set-up), a run whose job.json no longer names its owner is still
    listed and deletable; with admins, only they reach it (and others hear why)."""
    _, bad = _runs(root, 2)
    (root / bad / JOB).write_text("{")
    store = RunStore(root)
    try:
        alone = TestClient(create_app(store, Supervisor(store), ServerSettings(tokens=parse_tokens(TOKEN))))
        assert bad in {run["id"] for run in alone.get("/runs", headers=_auth(TOKEN)).json()}
        refused = _app(store).get(f"/runs/{bad}", headers=_auth(BOB))
        assert refused.status_code == 403 and "names no owner; only an admin token" in refused.json()["detail"]
        assert alone.delete(f"/runs/{bad}", headers=_auth(TOKEN)).status_code == 204
    finally:
        store.close()
