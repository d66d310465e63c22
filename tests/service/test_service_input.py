"""The service against hostile or unlucky requests, in process (no server started): bodies that expand, nest
or carry more than JSON holds; weights named by path or for another model; resume limits; tokens; and the
state changes a cancel, a resume, a delete and the supervisor make at the same time."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from served import TINY, TOKEN

from autoprune.builtins.models import small_cnn
from autoprune.composition.config import SearchConfig
from autoprune.service.app import ServerSettings, create_app
from autoprune.service.auth import TOKEN_ENV, first_token, parse_tokens
from autoprune.service.store import JOB, NoSuchRunError, RunStore
from autoprune.service.supervisor import Supervisor
from search_spaces.ground.errors import ConfigError

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[TestClient, RunStore, Supervisor]]:
    store = RunStore(tmp_path / "runs")
    supervisor = Supervisor(store)  # not started: the tests step it by hand
    try:
        yield TestClient(create_app(store, supervisor, ServerSettings(tokens={TOKEN: "default"}))), store, supervisor
    finally:
        store.close()


def _post(client: TestClient, body: bytes | str, content_type: str) -> Any:
    return client.post("/runs", content=body, headers={**AUTH, "Content-Type": content_type})


def test_bodies_that_expand_nest_deeply_or_hold_more_than_json_are_refused(service) -> None:
    client, store, _ = service
    tiny = json.dumps(TINY)
    aliases = "\n".join(["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
                        + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 7)])
    deep = {**TINY, "searcher_options": {"fit": json.loads("[" * 40 + "]" * 40)}}
    refused = [  # (body, content type, status, message)
        (f"{aliases}\nmodel: small_cnn\n", "application/yaml", 400, "YAML aliases (*name) are not accepted"),
        ("[" * 5000 + "]" * 5000, "application/json", 400, "nested more than 32 levels deep"),
        (json.dumps(deep), "application/json", 400, "nested more than 32 levels deep (at searcher_options.fit"),
        ("model: small_cnn\nseed: 2020-01-01\n", "application/yaml", 400, "seed: a date (datetime.date(2020, 1, 1))"),
        ("tracking: !!set {a, b}\n", "application/yaml", 400, "tracking: a set"),
        (tiny, "text/x-toml", 415, "Content-Type 'text/x-toml' is not accepted"),
        (tiny + " " * (1 << 20), "application/json", 413, "at most 1,048,576 are accepted"),
        ("[1, 2]", "application/json", 400, "the config must be a mapping, got list"),
    ]
    for body, content_type, status, message in refused:
        response = _post(client, body, content_type)
        assert response.status_code == status and message in response.json()["detail"], (body[:40], response.text)
    assert store.all() == [] and _post(client, tiny, "application/json").status_code == 201


def test_configs_a_driver_would_refuse_are_refused_at_submit(service) -> None:
    client, store, _ = service
    refused = [
        ({**TINY, "searcher_options": {"x": 1}}, "searcher 'random' has no option 'x'; accepted: fit"),
        ({**TINY, "ignore": ["no.such.module"]},
         "'ignore' names modules 'small_cnn' does not have: ['no.such.module']"),
        ({**TINY, "final_recovery": "weight_rewind", "rewind_checkpoint": "/etc/passwd"},
         "config entry 'rewind_checkpoint' must be the id (sha256) of a checkpoint uploaded with POST /checkpoints"),
    ]
    for config, message in refused:
        response = client.post("/runs", json=config, headers=AUTH)
        assert response.status_code == 400 and message in response.json()["detail"], (config, response.text)
    assert store.all() == []


def test_uploaded_weights_serve_only_the_models_they_were_checked_against(service) -> None:
    client, store, _ = service
    weights = io.BytesIO()
    torch.save(small_cnn(in_channels=1).state_dict(), weights)
    upload = client.post("/checkpoints", params={"model": "small_cnn"}, content=weights.getvalue(), headers=AUTH)
    assert upload.status_code == 201
    checkpoint = upload.json()["id"]
    again = client.post("/checkpoints", params={"model": "resnet20"}, content=weights.getvalue(), headers=AUTH)
    assert again.status_code == 400 and "does not fit model 'resnet20'" in again.json()["detail"]  # checked again
    for entry in ("checkpoint", "rewind_checkpoint"):
        other = client.post("/runs", json={**TINY, "model": "resnet20", entry: checkpoint}, headers=AUTH)
        assert other.status_code == 400, other.text
        assert f"{entry} '{checkpoint}' was uploaded for ['small_cnn'], not 'resnet20'" in other.json()["detail"]
    run = client.post("/runs", json={**TINY, "final_recovery": "weight_rewind", "rewind_checkpoint": checkpoint},
                      headers=AUTH)
    assert run.status_code == 201, run.text
    assert store.get(run.json()["id"])["config"]["rewind_checkpoint"] == str(store.checkpoints / f"{checkpoint}.pt")


def test_a_resume_is_held_to_the_servers_limits(service) -> None:
    client, store, _ = service
    run_id = store.create(SearchConfig.from_dict(TINY), owner="default")["id"]
    store.update(run_id, status="failed")
    for body, message in ((b'{"trials": 1000000000}', "trials must be at most 10,000 on this server"),
                          (b'{"trials": 5, "trails": 3}', "the resume body takes only 'trials', got ['trails']"),
                          (b"[5]", 'the resume body ({"trials": N}) must be a mapping, got list'),
                          (b'{"trials": 0}', "resume 'trials' must be an integer >= 1, got 0")):
        response = client.post(f"/runs/{run_id}/resume", content=body, headers=AUTH)
        assert response.status_code == 400 and message in response.json()["detail"], (body, response.text)
    assert store.get(run_id)["status"] == "failed"
    assert client.post(f"/runs/{run_id}/resume", json={"trials": 5}, headers=AUTH).json()["status"] == "queued"


class _FakeProcess:
    """A driver that never ends (Popen's stand-in)."""

    pid = 4242

    def __init__(self, *_: Any, **__: Any) -> None:
        self.signals: list[int] = []

    def poll(self) -> None:
        return None

    def send_signal(self, signum: int) -> None:
        self.signals.append(signum)


def test_a_cancel_that_races_the_supervisor_never_leaves_a_driver_unaccounted(service, monkeypatch) -> None:
    client, store, supervisor = service
    monkeypatch.setattr("autoprune.service.supervisor.subprocess.Popen", _FakeProcess)
    run_id = store.create(SearchConfig.from_dict(TINY), owner="default")["id"]
    snapshot = store.queued()  # the supervisor's view, taken before the cancel lands
    assert client.post(f"/runs/{run_id}/cancel", headers=AUTH).json()["status"] == "cancelled"
    monkeypatch.setattr(store, "queued", lambda: snapshot)
    supervisor._start_queued()
    assert supervisor._drivers == {} and store.get(run_id)["status"] == "cancelled"  # no driver for a cancelled run

    monkeypatch.undo()
    monkeypatch.setattr("autoprune.service.supervisor.subprocess.Popen", _FakeProcess)
    resumed = client.post(f"/runs/{run_id}/resume", headers=AUTH)
    assert resumed.json()["status"] == "queued"
    supervisor._start_queued()  # started: the record says so before a cancel, resume or delete can look
    assert store.get(run_id)["status"] == "running" and store.get(run_id)["pid"] == _FakeProcess.pid
    assert client.delete(f"/runs/{run_id}", headers=AUTH).status_code == 409
    assert client.post(f"/runs/{run_id}/resume", headers=AUTH).status_code == 409
    cancelled = client.post(f"/runs/{run_id}/cancel", headers=AUTH).json()
    assert cancelled["status"] == "running" and store.get(run_id)["cancel_requested"]
    supervisor._cancel()
    assert supervisor._drivers[run_id].process.signals  # the running driver is told to stop


def test_listing_runs_skips_one_deleted_meanwhile_and_file_names_with_nul_are_refused(service, monkeypatch) -> None:
    client, store, _ = service
    kept, gone = (store.create(SearchConfig.from_dict(TINY), owner="default")["id"] for _ in range(2))
    progress = store.progress

    def deleted_meanwhile(run_id: str) -> dict[str, Any]:
        if run_id == gone:
            raise NoSuchRunError(f"no run {run_id!r} on this server")
        return progress(run_id)

    monkeypatch.setattr(store, "progress", deleted_meanwhile)
    listed = client.get("/runs", headers=AUTH)
    assert listed.status_code == 200 and [r["id"] for r in listed.json()] == [kept]
    response = client.get(f"/runs/{kept}/files/a%00b", headers=AUTH)
    assert response.status_code == 400 and "is not a plain name" in response.json()["detail"]


def test_a_bad_job_record_leaves_the_other_runs_served(tmp_path, caplog) -> None:
    store = RunStore(tmp_path / "runs")
    good, bad = (store.create(SearchConfig.from_dict(TINY), owner="default")["id"] for _ in range(2))
    store.close()
    (tmp_path / "runs" / bad / JOB).write_text("{" + " " * (9 << 20))  # over the size a job file may have
    with caplog.at_level(logging.WARNING):
        store = RunStore(tmp_path / "runs")
    try:
        assert [job["id"] for job in store.all()] == [good]
        assert f"not serving run {bad}" in caplog.text and "a job file may have" in caplog.text
    finally:
        store.close()


def test_tokens_with_equals_signs_read_the_same_on_server_and_client(monkeypatch, tmp_path) -> None:
    padded = "dGhpcyBpcyBhIHNlY3JldCB0b2tlbg=="  # base64 ends in padding: one unnamed token
    assert parse_tokens(padded) == {padded: "default"} and first_token(padded) == padded
    named = "alice=abc=defghijklmnopqrstuvw"
    assert parse_tokens(named) == {"abc=defghijklmnopqrstuvw": "alice"}
    assert first_token(named) == "abc=defghijklmnopqrstuvw"
    with pytest.raises(ConfigError) as short:
        parse_tokens("alice=s3cr3t")
    assert "owner 'alice'" in str(short.value) and "s3cr3t" not in str(short.value)
    monkeypatch.setenv(TOKEN_ENV, named)
    store = RunStore(tmp_path / "runs")
    try:
        assert TOKEN_ENV not in Supervisor(store)._environment()  # plugins in a driver never see the tokens
    finally:
        store.close()
