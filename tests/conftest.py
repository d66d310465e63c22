"""Shared tiny models and data: everything runs on CPU in seconds."""

from __future__ import annotations

import os

# pytest-xdist's workers inherit COLUMNS=80 from execnet; the CLI's consoles (made at import) read it as a
# user's chosen width. The tests see output as a pipe or a log file has it: no COLUMNS.
os.environ.pop("COLUMNS", None)

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision
from factories import tiny_swin, tiny_vit
from torch import nn

from autoprune import Budget, search
from autoprune.builtins.data import DataBundle, load_digits
from autoprune.builtins.models import mobilenet_v2, resnet20, resnet56, small_cnn
from autoprune.evaluation.training import TrainConfig, train

torch.set_num_threads(1)


class TinyVGG(nn.Module):
    """A plain VGG-style net whose classifier flattens a feature map (reshape coupling)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


# name -> (factory, example input shape)
ARCHITECTURES = {
    "small_cnn": (lambda: small_cnn(in_channels=1), (1, 1, 8, 8)),
    "resnet20": (lambda: resnet20(), (1, 3, 16, 16)),
    "resnet56": (lambda: resnet56(), (1, 3, 16, 16)),
    "mobilenet_v2": (lambda: mobilenet_v2(), (1, 3, 16, 16)),
    "resnet18": (lambda: torchvision.models.resnet18(num_classes=10), (1, 3, 32, 32)),
    "vgg": (TinyVGG, (1, 3, 16, 16)),
    "vit": (tiny_vit, (2, 1, 16, 16)),  # attention modules are head groups (tests/search_spaces/test_attention.py)
    "swin": (tiny_swin, (2, 3, 32, 32)),
}


@pytest.fixture(scope="session")
def digits() -> DataBundle:
    return load_digits(batch_size=32, seed=0)


@pytest.fixture(scope="session")
def trained_cnn(digits: DataBundle) -> nn.Module:
    with torch.random.fork_rng():  # the same initial weights whatever ran before on this worker
        torch.manual_seed(0)
        model = small_cnn(in_channels=1)
    train(model, digits, TrainConfig(epochs=3, lr=0.05))
    return model.eval()


@pytest.fixture()
def cnn_inputs() -> torch.Tensor:
    return torch.zeros(1, 1, 8, 8)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Checkpoints go to a per-session temporary cache, never the user's."""
    monkeypatch.setenv("AUTOPRUNE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def finished_run(trained_cnn: nn.Module, digits: DataBundle, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished search's run directory with a sensitivity scan (its report covers every chart)."""
    run = tmp_path_factory.mktemp("report") / "run"
    search(
        trained_cnn,
        digits.example_inputs(),
        budget=Budget.flops(0.5),
        train_data=digits.train,
        val_data=digits.val,
        test_data=digits.test,
        searcher="sensitivity",
        searcher_options={"levels": [0.5, 1.0]},
        trials=10,
        evaluator={"bn_batches": 2, "finetune_steps": 2, "val_batches": 2},
        final={"steps": 2},
        run={"dir": run},
    )
    return run


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless chromium (a ``selenium.webdriver.Chrome``) at 1280x800; skips without selenium or chromium."""
    pytest.importorskip("selenium.webdriver", reason="selenium is not installed: pip install -e '.[dev]'")
    from browsing import chromium

    driver = chromium()
    try:
        yield driver
    finally:
        driver.quit()
