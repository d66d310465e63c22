"""Built-in models: a small CNN, CIFAR-style ResNet-20/56 and MobileNetV2 (torchvision)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from autoprune.builtins.registry import lookup
from search_spaces.ground.errors import ConfigError


class SmallCNN(nn.Module):
    """A small CNN with a concat of two branches (channel coupling across a ``torch.cat``)."""

    def __init__(self, *, in_channels: int = 1, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.branch_a = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.branch_b = nn.Sequential(
            nn.Conv2d(width, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.head = nn.Sequential(
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.cat([self.branch_a(x), self.branch_b(x)], dim=1)
        x = self.pool(self.head(x)).flatten(1)
        return self.classifier(x)


class BasicBlock(nn.Module):
    """The CIFAR ResNet basic block (He et al. 2016, option B shortcut: 1x1 conv when the shape changes)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet for small images: three stages of ``n`` basic blocks with 16, 32 and 64 channels."""

    def __init__(self, depth: int, *, in_channels: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ConfigError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110), got {depth!r}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers: list[nn.Module] = []
        in_planes = 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(n):
                blocks.append(BasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.pool(x).flatten(1))


def resnet20(*, in_channels: int = 3, num_classes: int = 10) -> CifarResNet:
    """CIFAR ResNet-20 (0.27 M parameters)."""
    return CifarResNet(20, in_channels=in_channels, num_classes=num_classes)


def resnet56(*, in_channels: int = 3, num_classes: int = 10) -> CifarResNet:
    """CIFAR ResNet-56 (0.85 M parameters)."""
    return CifarResNet(56, in_channels=in_channels, num_classes=num_classes)


def mobilenet_v2(*, in_channels: int = 3, num_classes: int = 10) -> nn.Module:
    """torchvision MobileNetV2 (depthwise separable, inverted residuals) with a stride-1 stem for small images."""
    from torchvision.models import mobilenet_v2 as tv_mobilenet_v2

    model = tv_mobilenet_v2(num_classes=num_classes)
    stem = model.features[0][0]
    model.features[0][0] = nn.Conv2d(in_channels, stem.out_channels, 3, stride=1, padding=1, bias=False)
    return model


def resnet18(*, in_channels: int = 3, num_classes: int = 10) -> nn.Module:
    """torchvision ResNet-18 with the usual small-image stem (3x3 stride-1 convolution, no max pooling)."""
    from torchvision.models import resnet18 as tv_resnet18

    model = tv_resnet18(num_classes=num_classes)
    model.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def small_cnn(*, in_channels: int = 1, num_classes: int = 10) -> SmallCNN:
    """The small concat CNN used by the demo."""
    return SmallCNN(in_channels=in_channels, num_classes=num_classes)


def vit_p4(*, in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    """A small vision transformer for 28x28 images (timm's VisionTransformer): 4x4 patches (49 tokens and a class
    token), 6 blocks 128 wide with 4 heads of 32 and MLPs twice as wide (0.8 M parameters; 1.3x ResNet-20's FLOPs)."""
    try:
        from timm.models.vision_transformer import VisionTransformer
    except ImportError as exc:
        raise ConfigError("model 'vit_p4' needs timm: pip install 'autoprune[vit]'") from exc
    return VisionTransformer(img_size=28, patch_size=4, in_chans=in_channels, num_classes=num_classes,
                             embed_dim=128, depth=6, num_heads=4, mlp_ratio=2.0)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "small_cnn": small_cnn,
    "resnet20": resnet20,
    "resnet56": resnet56,
    "mobilenet_v2": mobilenet_v2,
    "resnet18": resnet18,
    "vit_p4": vit_p4,
}


def build_model(name: str, *, in_channels: int, num_classes: int, seed: int | None = None) -> nn.Module:
    """Build a built-in model by name, one an installed package registers (entry point group
    ``autoprune.models``), or a user model from ``package.module:factory`` (trusted input only).

    A user factory is called with ``in_channels`` and ``num_classes`` keyword arguments. With ``seed`` the initial
    weights are drawn from ``torch.manual_seed(seed)`` (the global generator is left as it was), so a baseline
    trained from them is the same in every process; without it they depend on the process's generator state.
    """
    factory = lookup("model", name, MODELS)
    try:
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            model = factory(in_channels=in_channels, num_classes=num_classes)
    except TypeError as exc:
        raise ConfigError(f"model factory {name!r} must accept in_channels= and num_classes=: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model factory {name!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model
