"""Saving and loading pruned models without unpickling code: a state dict plus the pruning history."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autoprune.errors import RunDirError
from autoprune.io import atomic_write, atomic_write_json
from autoprune.pruning import PruningHistory, replay_history

STATE_FILE = "pruned_state_dict.pt"
HISTORY_FILE = "pruning_history.json"
META_FILE = "meta.json"


def save_pruned_model(
    directory: str | Path, model: nn.Module, history: PruningHistory, *, meta: dict[str, Any] | None = None
) -> Path:
    """Write ``directory/{pruned_state_dict.pt, pruning_history.json, meta.json}`` atomically, file by file."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write(directory / STATE_FILE, lambda tmp: torch.save(model.state_dict(), tmp))
    atomic_write_json(directory / HISTORY_FILE, [[n, o, i] for n, o, i in history])
    atomic_write_json(directory / META_FILE, meta or {})
    return directory


def load_pruned_model(fresh_model: nn.Module, directory: str | Path, example_inputs: Any) -> nn.Module:
    """Turn a fresh, unpruned instance of the architecture into the saved pruned model (in place).

    The pruning history is replayed with Torch-Pruning, then the weights are loaded with
    ``torch.load(weights_only=True)``: no code is unpickled.
    """
    directory = Path(directory)
    for name in (STATE_FILE, HISTORY_FILE):
        if not (directory / name).exists():
            raise RunDirError(f"{str(directory)!r} has no {name}; expected a directory written by save_pruned_model")
    history = json.loads((directory / HISTORY_FILE).read_text())
    replay_history(fresh_model, history, example_inputs)
    state = torch.load(directory / STATE_FILE, weights_only=True, map_location="cpu")
    fresh_model.load_state_dict(state)
    return fresh_model
