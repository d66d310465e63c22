"""Checkpoint uploads against bodies built to cost memory: an archive is checked before anything in it is
unpickled, so the server's memory grows by a small multiple of the body at most; uploads in flight share a
ceiling."""

from __future__ import annotations

import io
import tracemalloc
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from served import TOKEN

from autoprune.builtins.models import small_cnn
from autoprune.service.app import ServerSettings, create_app
from autoprune.service.archive import check_archive
from autoprune.service.store import RunStore
from autoprune.service.supervisor import Supervisor
from search_spaces.ground.errors import ConfigError

AUTH = {"Authorization": f"Bearer {TOKEN}"}
AMPLIFYING = b"\x80\x02" + b"]" * (16 << 20)  # the weights_only unpickler builds one list per "]"


def _client(root: Path, **settings: int) -> TestClient:
    store = RunStore(root)
    return TestClient(create_app(store, Supervisor(store), ServerSettings(tokens={TOKEN: "default"}, **settings)))


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    test_client = _client(tmp_path / "runs")
    yield test_client
    test_client.app.state.store.close()


def _archive(records: dict[str, bytes], *, compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in records.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _state_dict_bytes() -> bytes:
    buffer = io.BytesIO()
    torch.save(small_cnn(in_channels=1).state_dict(), buffer)
    return buffer.getvalue()


def _upload(client: TestClient, body: bytes) -> tuple[int, str, int]:
    """Status, detail and the peak of Python memory allocated while the server handled the upload."""
    tracemalloc.start()
    try:
        response = client.post("/checkpoints", params={"model": "small_cnn"}, content=body, headers=AUTH)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return response.status_code, response.json().get("detail", ""), peak


def test_an_amplifying_pickle_costs_less_than_4x_its_size(client) -> None:
    wrapped = _archive({"archive/data.pkl": AMPLIFYING, "archive/version": b"3\n"})
    opcodes = _archive({"archive/data.pkl": b"\x80\x02" + b"]" * 60_000 + b".", "archive/version": b"3\n"})
    for body, message in ((AMPLIFYING, "not a zip archive as torch.save writes it"),
                          (wrapped, "data.pkl is 16,777,218 bytes; a state dict of model 'small_cnn'"),
                          (opcodes, "more than 5,760 opcodes")):
        status, detail, peak = _upload(client, body)
        assert status == 400 and message in detail, (status, detail)
        assert peak < 4 * len(body), f"the server's memory grew by {peak / len(body):.1f}x the body"
    status, detail, peak = _upload(client, _state_dict_bytes())  # a real state dict still loads
    assert status == 201, detail


def test_archives_torch_save_does_not_write_are_refused_before_unpickling() -> None:
    weights = _state_dict_bytes()
    compressed = _archive({"archive/data.pkl": b"\x80\x02}q\x00.", "archive/version": b"3\n"},
                          compression=zipfile.ZIP_DEFLATED)
    two_folders = _archive({"a/data.pkl": b"\x80\x02}q\x00.", "b/version": b"3\n"})
    many = _archive({f"archive/data/{i}": b"" for i in range(100)} | {"archive/data.pkl": b"\x80\x02}q\x00."})
    twice = io.BytesIO()  # a small pickle for zipfile (the last record), an amplifying one torch might find first
    with warnings.catch_warnings(), zipfile.ZipFile(twice, "w") as archive:
        warnings.simplefilter("ignore")  # zipfile warns "Duplicate name"
        archive.writestr("archive/data.pkl", b"\x80\x02]" + b"]" * 1000 + b".")
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    refused = [
        (weights + b"comment", "not a zip archive"),
        (b"junk" + weights, "not a zip archive"),
        (compressed, "stored uncompressed in one folder"),
        (two_folders, "stored uncompressed in one folder"),
        (many, "lists 101 records"),
        (twice.getvalue(), "more than one record named 'archive/data.pkl'"),
        (_archive({"archive/data.pkl": b"\x80\x02\xff"}), "data.pkl is not a pickle"),
        (_archive({"archive/version": b"3\n"}), "no item named 'archive/data.pkl'"),
    ]
    for body, message in refused:
        with pytest.raises(ConfigError) as error:
            check_archive(body, model="small_cnn", tensors=26)
        assert message in str(error.value), (message, str(error.value))
    check_archive(weights, model="small_cnn", tensors=26)


def test_uploads_in_flight_share_a_memory_ceiling(tmp_path) -> None:
    weights = _state_dict_bytes()
    client = _client(tmp_path / "runs", max_upload_memory=len(weights))  # body and tensors: twice that
    try:
        response = client.post("/checkpoints", params={"model": "small_cnn"}, content=weights, headers=AUTH)
        assert response.status_code == 503 and "ceiling" in response.json()["detail"], response.text
        assert response.headers["retry-after"] == "10"
        assert client.app.state.uploads._held == 0  # a refused upload gives its bytes back
    finally:
        client.app.state.store.close()
    client = _client(tmp_path / "runs", max_upload_memory=2 * len(weights))
    try:
        response = client.post("/checkpoints", params={"model": "small_cnn"}, content=weights, headers=AUTH)
        assert response.status_code == 201, response.text
        assert client.app.state.uploads._held == 0
    finally:
        client.app.state.store.close()
