"""Built-in datasets: scikit-learn digits (embedded), Fashion-MNIST (local IDX files), CIFAR-10 (torchvision)."""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler, TensorDataset

from autoprune.builtins.registry import lookup
from search_spaces.ground.errors import DataError

FASHION_MNIST_DIR = Path(os.environ.get("AUTOPRUNE_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))


@dataclass(frozen=True)
class DataBundle:
    """Loaders and shapes for one dataset. ``val`` is a fixed split of the training set; ``test`` is held out.

    ``split_key`` identifies the train/val split and batching (it keys cached baseline checkpoints, so a
    checkpoint never saw another split's validation images); user factories should set it.
    """

    name: str
    train: DataLoader
    val: DataLoader
    test: DataLoader
    in_channels: int
    num_classes: int
    image_size: int
    split_key: str = ""

    def example_inputs(self, batch: int = 1) -> torch.Tensor:
        """A zero tensor shaped like ``batch`` inputs (for tracing and FLOPs counting)."""
        return torch.zeros(batch, self.in_channels, self.image_size, self.image_size)


def tensor_loader(dataset: TensorDataset, batch_size: int, *, shuffle: bool = False,
                  generator: torch.Generator | None = None, drop_last: bool = False) -> DataLoader:
    """A loader of ``dataset`` that cuts each batch with one indexing operation per tensor instead of collating
    ``batch_size`` samples one by one; it yields the same batches, in the same order, as
    ``DataLoader(dataset, batch_size, shuffle=shuffle, generator=generator, drop_last=drop_last)``."""
    order = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
    return DataLoader(dataset, sampler=BatchSampler(order, batch_size, drop_last), batch_size=None, generator=generator)


def _bundle(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    batch_size: int,
    val_fraction: float,
    seed: int,
    num_classes: int,
) -> DataBundle:
    """Standardize with training statistics, split off a validation set, and wrap in loaders."""
    x_train = x_train.astype(np.float32)
    x_test = x_test.astype(np.float32)
    mean, std = float(x_train.mean()), float(x_train.std()) or 1.0
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    order = np.random.default_rng(seed).permutation(len(x_train))
    n_val = max(1, int(len(x_train) * val_fraction))
    val_idx, train_idx = order[:n_val], order[n_val:]
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= len(train_idx):
        raise DataError(f"batch_size must be an integer in [1, {len(train_idx)}] for {name}, got {batch_size!r}")

    def dataset(x: np.ndarray, y: np.ndarray) -> TensorDataset:
        return TensorDataset(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y.astype(np.int64)))

    return DataBundle(
        name=name,
        train=tensor_loader(dataset(x_train[train_idx], y_train[train_idx]), batch_size, shuffle=True,
                            generator=torch.Generator().manual_seed(seed), drop_last=True),
        val=tensor_loader(dataset(x_train[val_idx], y_train[val_idx]), 256),
        test=tensor_loader(dataset(x_test, y_test), 256),
        in_channels=x_train.shape[1],
        num_classes=num_classes,
        image_size=x_train.shape[2],
        split_key=f"{name}:seed={seed}:val={val_fraction}:batch={batch_size}:n={len(x_train)}",
    )


def load_digits(*, batch_size: int = 64, seed: int = 0, val_fraction: float = 0.15) -> DataBundle:
    """scikit-learn's 8x8 handwritten digits (1797 images, embedded in the package); 20% held out for test."""
    from sklearn.datasets import load_digits as sk_digits

    data = sk_digits()
    x = data.images[:, None, :, :]
    y = data.target
    order = np.random.default_rng(12345).permutation(len(x))  # a fixed test split, independent of seed
    n_test = len(x) // 5
    test, train = order[:n_test], order[n_test:]
    return _bundle("digits", x[train], y[train], x[test], y[test], batch_size=batch_size,
                   val_fraction=val_fraction, seed=seed, num_classes=10)


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{str(path)!r} is not an unsigned-byte IDX file")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _find_idx(directory: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (directory / name).exists():
            return directory / name
    raise DataError(
        f"Fashion-MNIST file {stem}[.gz] not found in {str(directory)!r}; install the Debian package "
        "'dataset-fashion-mnist' (apt-get install dataset-fashion-mnist) or pass data_dir= / --data-dir "
        "(environment: AUTOPRUNE_FASHION_MNIST_DIR)"
    )


def load_fashion_mnist(
    *, batch_size: int = 128, seed: int = 0, val_fraction: float = 0.1, data_dir: str | Path | None = None,
    limit: int | None = None,
) -> DataBundle:
    """Fashion-MNIST (28x28 grayscale, 60k train / 10k test) from local IDX files; ``limit`` caps train size."""
    directory = Path(data_dir) if data_dir is not None else FASHION_MNIST_DIR
    x_train = _read_idx(_find_idx(directory, "train-images-idx3-ubyte"))[:, None] / np.float32(255)
    y_train = _read_idx(_find_idx(directory, "train-labels-idx1-ubyte"))
    x_test = _read_idx(_find_idx(directory, "t10k-images-idx3-ubyte"))[:, None] / np.float32(255)
    y_test = _read_idx(_find_idx(directory, "t10k-labels-idx1-ubyte"))
    if limit is not None:
        x_train, y_train = x_train[:limit], y_train[:limit]
    return _bundle("fashion-mnist", x_train, y_train, x_test, y_test, batch_size=batch_size,
                   val_fraction=val_fraction, seed=seed, num_classes=10)


def load_cifar10(
    *, batch_size: int = 128, seed: int = 0, val_fraction: float = 0.1, data_dir: str | Path | None = None
) -> DataBundle:
    """CIFAR-10 through torchvision (downloads into ``data_dir`` when online)."""
    from torchvision.datasets import CIFAR10

    root = Path(data_dir) if data_dir is not None else Path.home() / ".cache" / "autoprune" / "cifar10"
    try:
        train = CIFAR10(str(root), train=True, download=True)
        test = CIFAR10(str(root), train=False, download=True)
    except Exception as exc:  # no network, partial download, ...
        raise DataError(f"CIFAR-10 is not available in {str(root)!r} and could not be downloaded: {exc}") from exc
    x_train = train.data.transpose(0, 3, 1, 2) / np.float32(255)
    x_test = test.data.transpose(0, 3, 1, 2) / np.float32(255)
    return _bundle("cifar10", x_train, np.array(train.targets), x_test, np.array(test.targets),
                   batch_size=batch_size, val_fraction=val_fraction, seed=seed, num_classes=10)


DATASETS: dict[str, Callable[..., DataBundle]] = {
    "digits": load_digits,
    "fashion-mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
}


def load_dataset(
    name: str, *, batch_size: int | None = None, seed: int = 0, data_dir: str | Path | None = None
) -> DataBundle:
    """A built-in dataset by name, one an installed package registers (entry point group ``autoprune.datasets``),
    or ``package.module:factory`` (trusted input only) returning a :class:`DataBundle`.

    A user factory is called with ``batch_size``, ``seed`` and ``data_dir`` keyword arguments.
    """
    options: dict[str, object] = {"seed": seed}
    if batch_size is not None:
        options["batch_size"] = batch_size
    if name not in DATASETS:
        factory = lookup("dataset", name, DATASETS)
        try:
            bundle = factory(**options, data_dir=data_dir)
        except TypeError as exc:
            raise DataError(f"dataset factory {name!r} must accept batch_size=, seed= and data_dir=: {exc}") from exc
        if not isinstance(bundle, DataBundle):
            raise DataError(f"dataset factory {name!r} returned {type(bundle).__name__}, not a DataBundle")
        return bundle
    if name != "digits":
        options["data_dir"] = data_dir
    elif data_dir is not None:
        raise DataError("the digits dataset is embedded in scikit-learn and takes no data_dir")
    return DATASETS[name](**options)
