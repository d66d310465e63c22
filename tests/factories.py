"""User-style factories, reachable as ``factories:tiny_model`` / ``factories:tiny_data`` in tests."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from agents.random_search import RandomSearcher
from autoprune.builtins.data import DataBundle
from autoprune.searcher import SearchContext
from search_spaces.ground.errors import ConfigError


def tiny_vit() -> nn.Module:
    """timm's ViT at 16x16 with 4x4 patches, 2 blocks 32 wide, 4 heads of 8."""
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    return VisionTransformer(img_size=16, patch_size=4, in_chans=1, num_classes=10, embed_dim=32, depth=2,
                             num_heads=4, mlp_ratio=2.0).eval()


def tiny_swin() -> nn.Module:
    """timm's Swin at 32x32 with 4x4 windows, two stages of 2 and 4 heads."""
    from timm.models.swin_transformer import SwinTransformer

    torch.manual_seed(0)
    return SwinTransformer(img_size=32, patch_size=4, in_chans=3, num_classes=10, window_size=4, embed_dim=16,
                           depths=(1, 1), num_heads=(2, 4), mlp_ratio=2.0).eval()


def tiny_model(*, in_channels: int, num_classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(in_channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes),
    )


class FixedSplit(nn.Module):
    """``body``'s channels are split into fixed sizes: pruning it breaks the forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.body = nn.Conv2d(8, 16, 3, padding=1)
        self.left = nn.Conv2d(8, 8, 1)
        self.right = nn.Conv2d(8, 8, 1)
        self.head = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.split(self.body(torch.relu(self.stem(x))), [8, 8], dim=1)
        x = torch.cat([self.left(a), self.right(b)], dim=1)
        return self.head(x.mean((2, 3)))


def tiny_data(*, batch_size: int = 16, seed: int = 0, data_dir: str | None = None) -> DataBundle:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(96, 2, 6, 6, generator=generator)
    y = (x.mean(dim=(1, 2, 3)) > 0).long()
    data = TensorDataset(x, y)
    return DataBundle("tiny", DataLoader(data, batch_size=batch_size, shuffle=True, generator=generator),
                      DataLoader(data, batch_size=32), DataLoader(data, batch_size=32), 2, 2, 6)


class SearcherThatRefusesTheSpace(RandomSearcher):
    """A searcher whose setup rejects the problem (as a searcher needing more trials would)."""

    def _setup(self, context: SearchContext) -> None:
        raise ConfigError(f"needs at least {context.trials + 100} trials")


class RecordingSearcher(RandomSearcher):
    """Random search that remembers the fidelity of every score it is told, and the accuracy it may learn from."""

    def __init__(self) -> None:
        super().__init__()
        self.told_fidelities: list[int] = []
        self.learnable: list[float | None] = []

    def _tell(self, trial, score) -> None:
        self.told_fidelities.append(score.fidelity)
        self.learnable.append(self.context.comparable_accuracy(score))


class QualitySearcher(RandomSearcher):
    """Proposes uniform policies whose quality (1 - ratio) follows a fixed script, then random ones."""

    def __init__(self, qualities: list[float]) -> None:
        super().__init__()
        self.qualities = qualities

    def _ask(self, trial_id: int):
        if trial_id >= len(self.qualities):
            return super()._ask(trial_id)
        ratio = 1.0 - self.qualities[trial_id]
        return self.context.policy({g.name: min(ratio, g.max_ratio) for g in self.context.space})


class ToyEvaluator:
    """An evaluator with known scores: at ``steps`` finetune steps a policy scores ``quality * steps / full``
    (``quality / full`` at 0 steps, the screen), where quality is 1 - its first group's ratio (picklable, so Ray
    workers can run it)."""

    def __init__(self, full: int, space) -> None:
        from autoprune.evaluation.evaluator import EvaluatorConfig

        self.config = EvaluatorConfig(finetune_steps=full)
        self.space = space

    def evaluate_rungs(self, policy, *, steps=None, rungs=()):
        from autoprune.trial import Score

        full = self.config.finetune_steps
        quality = 1.0 - policy[self.space.names[0]]
        stops = [*[r for r in rungs if r < full], full]
        for rung, done in enumerate(stops):
            yield Score(quality * max(done, 1) / full, 0.0, 1, 1, True, done, 0.0, rung=rung,
                        first_accuracy=quality * max(stops[0], 1) / full)


def use_clock(monkeypatch, clock) -> None:
    """Time every latency measurement with ``clock(prepared, **setting) -> ms`` instead of the machine's clock,
    and build every runtime as the eager model (``prepared.runtime`` still names the runtime asked for), so the
    latency pipeline runs deterministically and without compiling anything."""
    from autoprune.latency import table as lt
    from search_spaces import measure, runtimes, widths

    for module in (measure, lt, widths):
        monkeypatch.setattr(module, "time_runner_ms", clock)
    monkeypatch.setattr(runtimes, "_runner", lambda model, inputs, runtime, workdir, **_: lambda: model(*inputs))
