"""Uploaded weights: checked (loaded with ``weights_only=True``, against a model's parameter names), stored by
content as ``<sha256>.pt`` under the runs root's ``checkpoints/``, and recorded with the models they were checked
against (``<sha256>.json``), so a config may name them only for one of those models."""

from __future__ import annotations

import hashlib
import io
import re
import threading
from pathlib import Path

import torch

from autoprune.builtins.models import build_model
from autoprune.service.archive import check_archive
from search_spaces.ground.documents import loads_json
from search_spaces.ground.errors import ConfigError
from search_spaces.ground.io import atomic_write, atomic_write_json

CHECKPOINT_ID = re.compile(r"^[0-9a-f]{64}$")
_RECORDS = threading.Lock()  # one upload at a time adds to a checkpoint's record of models


def check_state_dict(body: bytes, model: str) -> None:
    """The upload must be a state dict (loaded with ``weights_only=True``) with the model's parameter names.

    The archive is checked first (:func:`~autoprune.service.archive.check_archive`): nothing is unpickled from
    one whose pickle could build more objects than a state dict of ``model`` has, so loading it costs memory
    of the order of the body."""
    expected = set(build_model(model, in_channels=1, num_classes=10).state_dict())
    check_archive(body, model=model, tensors=len(expected))
    try:
        state = torch.load(io.BytesIO(body), weights_only=True, map_location="cpu")
    except Exception as exc:  # any unreadable or unsafe file: refused, nothing ran
        raise ConfigError(f"the upload is not a state dict readable with weights_only=True: {exc}") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError("the upload must be a state dict (names -> tensors) saved with torch.save")
    if set(state) != expected:
        missing, extra = sorted(expected - set(state))[:5], sorted(set(state) - expected)[:5]
        raise ConfigError(f"the upload does not fit model {model!r}: missing {missing}, unexpected {extra}")


def save_checkpoint(checkpoints: Path, body: bytes, model: str) -> str:
    """Store uploaded weights by content, recording ``model`` as one they were checked against; their id."""
    digest = hashlib.sha256(body).hexdigest()
    checkpoints.mkdir(parents=True, exist_ok=True)
    target = checkpoints / f"{digest}.pt"
    if not target.exists():
        atomic_write(target, lambda tmp: tmp.write_bytes(body))
    with _RECORDS:
        models = set(_checkpoint_models(checkpoints, digest)) | {model}
        atomic_write_json(checkpoints / f"{digest}.json", {"models": sorted(models)})
    return digest


def uploaded_checkpoint(checkpoints: Path, checkpoint: str, model: str, *, entry: str = "checkpoint") -> Path:
    """The file of weights uploaded for ``model`` under the id ``POST /checkpoints`` returned.

    Raises:
        ConfigError: ``checkpoint`` is not such an id, was not uploaded, or was uploaded for other models.
    """
    if not CHECKPOINT_ID.match(checkpoint):
        raise ConfigError(f"config entry {entry!r} must be the id (sha256) of a checkpoint uploaded with "
                          f"POST /checkpoints, got {checkpoint!r}")
    path = checkpoints / f"{checkpoint}.pt"
    if not path.is_file():
        raise ConfigError(f"{entry} {checkpoint!r} was not uploaded to this server (POST /checkpoints)")
    models = _checkpoint_models(checkpoints, checkpoint)
    if model not in models:
        raise ConfigError(f"{entry} {checkpoint!r} was uploaded for {models or 'no model'}, not {model!r}; "
                          f"upload it with POST /checkpoints?model={model} to check it against that model")
    return path


def _checkpoint_models(checkpoints: Path, digest: str) -> list[str]:
    path = checkpoints / f"{digest}.json"
    return list(loads_json(path.read_bytes(), what=str(path))["models"]) if path.is_file() else []
