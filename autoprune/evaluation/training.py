"""Baseline training with a cached checkpoint (no model hub: baselines are trained here)."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from autoprune.builtins.cache import cache_dir
from autoprune.builtins.data import DataBundle
from autoprune.evaluation.evaluator import validate
from search_spaces.ground.errors import ConfigError, DataError
from search_spaces.ground.io import MAX_CHECKPOINT_BYTES, atomic_write, atomic_write_json, check_size
from search_spaces.ground.options import check_int, check_number

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Baseline training recipe: SGD with momentum and a cosine schedule."""

    epochs: int = 30
    lr: float = 0.05
    weight_decay: float = 5e-4
    seed: int = 0

    def __post_init__(self) -> None:
        check_int("train epochs", self.epochs, low=1)
        check_int("train seed", self.seed, low=0)
        check_number("train lr", self.lr, low=0, inclusive=False)
        check_number("train weight_decay", self.weight_decay, low=0)


def load_checkpoint(model: nn.Module, path: str | Path, *, name: str = "model") -> nn.Module:
    """Load a state dict file into ``model`` (``weights_only=True``); clear errors for a missing or unfit file."""
    path = Path(path)
    check_size(path, what="checkpoint", limit=MAX_CHECKPOINT_BYTES)
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
        model.load_state_dict(state)
    except Exception as exc:  # whatever fails in reading or fitting the file: the file is named, nothing ran
        raise ConfigError(f"checkpoint {str(path)!r} does not fit {name} (expected a state dict saved with "
                          f"torch.save, read with weights_only=True): {exc}") from exc
    return model.eval()


def train(
    model: nn.Module,
    data: DataBundle,
    config: TrainConfig,
    *,
    on_epoch: Callable[[int, float], None] | None = None,
    on_batch: Callable[[int, int, int], None] | None = None,
) -> float:
    """Train ``model`` in place; returns validation accuracy. ``on_epoch(epoch, val_accuracy)`` follows every
    epoch, ``on_batch(epoch, batches done, batches per epoch)`` every batch (epochs count from 1)."""
    torch.manual_seed(config.seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9, weight_decay=config.weight_decay,
                                nesterov=True)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs * len(data.train))
    if len(data.train) == 0:
        raise DataError(f"the {data.name} training loader yields no batches (batch size larger than the split?)")
    for epoch in range(config.epochs):
        model.train()
        for batch, (inputs, targets) in enumerate(data.train, start=1):
            loss = nn.functional.cross_entropy(model(inputs), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            if on_batch is not None:
                on_batch(epoch + 1, batch, len(data.train))
        accuracy, _ = validate(model, data.val)
        log.info("epoch %d/%d: val accuracy %.4f", epoch + 1, config.epochs, accuracy)
        if on_epoch is not None:
            on_epoch(epoch + 1, accuracy)
    model.eval()
    return accuracy


def checkpoint_path(model_name: str, data: DataBundle, config: TrainConfig) -> Path:
    """Where the cached checkpoint for this (model, dataset split, recipe) lives."""
    key = hashlib.sha1(json.dumps([model_name, data.split_key or data.name, asdict(config)]).encode()).hexdigest()[:10]
    safe = f"{model_name}-{data.name}".replace(":", "_").replace("/", "_")
    return cache_dir() / "checkpoints" / f"{safe}-{key}.pt"


def trained_model(
    model_name: str,
    model: nn.Module,
    data: DataBundle,
    config: TrainConfig,
    *,
    retrain: bool = False,
    on_epoch: Callable[[int, float], None] | None = None,
    on_batch: Callable[[int, int, int], None] | None = None,
) -> tuple[nn.Module, Path, bool]:
    """Load the cached checkpoint or train and cache it (``on_epoch``, ``on_batch``: :func:`train`'s). Returns
    (model, checkpoint path, trained now)."""
    path = checkpoint_path(model_name, data, config)
    if path.exists() and not retrain:
        return load_checkpoint(model, path, name=model_name), path, False
    accuracy = train(model, data, config, on_epoch=on_epoch, on_batch=on_batch)
    atomic_write(path, lambda tmp: torch.save(model.state_dict(), tmp))
    atomic_write_json(path.with_suffix(".json"), {"model": model_name, "dataset": data.name,
                                                  "val_accuracy": accuracy, **asdict(config)})
    return model, path, True
