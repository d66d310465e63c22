from __future__ import annotations

import gzip

import pytest
import torch

from autoprune.builtins.data import FASHION_MNIST_DIR, load_dataset, load_digits, load_fashion_mnist, tensor_loader
from autoprune.builtins.models import MODELS, build_model
from autoprune.cli.main import main
from search_spaces.ground.errors import ConfigError, DataError, UnknownNameError


def test_digits_split_is_fixed_and_standardized() -> None:
    data = load_digits(batch_size=32, seed=0)
    assert (data.in_channels, data.num_classes, data.image_size) == (1, 10, 8)
    sizes = [len(loader.dataset) for loader in (data.train, data.val, data.test)]
    assert sum(sizes) == 1797 and sizes[2] == 359
    x, y = next(iter(data.train))
    assert x.shape == (32, 1, 8, 8) and y.dtype == torch.int64
    assert abs(float(data.train.dataset.tensors[0].mean())) < 0.1
    other_seed = load_digits(seed=1)
    assert torch.equal(other_seed.test.dataset.tensors[1], data.test.dataset.tensors[1])


@pytest.mark.skipif(not FASHION_MNIST_DIR.exists(), reason="Debian package dataset-fashion-mnist not installed")
@pytest.mark.parametrize(("shuffle", "drop_last"), [(True, True), (True, False), (False, False)])
def test_tensor_loader_yields_the_batches_of_a_collating_loader(shuffle: bool, drop_last: bool) -> None:
    dataset = torch.utils.data.TensorDataset(torch.randn(103, 1, 4, 4), torch.arange(103))
    ours = tensor_loader(dataset, 16, shuffle=shuffle, generator=torch.Generator().manual_seed(3), drop_last=drop_last)
    theirs = torch.utils.data.DataLoader(dataset, 16, shuffle=shuffle, generator=torch.Generator().manual_seed(3),
                                         drop_last=drop_last)
    assert len(ours) == len(theirs) == (6 if drop_last else 7)
    for _ in range(2):  # a second epoch continues the generator the same way
        pairs = list(zip(ours, theirs, strict=True))
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in pairs)
    if shuffle:  # reseeded as the evaluator does before each candidate
        ours.generator.manual_seed(0)
        theirs.generator.manual_seed(0)
        assert all(torch.equal(a[1], b[1]) for a, b in zip(ours, theirs, strict=True))


def test_fashion_mnist_from_local_idx_files() -> None:
    data = load_fashion_mnist(limit=2000, batch_size=50)
    assert (data.in_channels, data.image_size) == (1, 28)
    assert len(data.test.dataset) == 10000 and len(data.train.dataset) + len(data.val.dataset) == 2000


def test_bad_idx_files_and_missing_directories(tmp_path) -> None:
    with pytest.raises(DataError, match="dataset-fashion-mnist"):
        load_fashion_mnist(data_dir=tmp_path)
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        with gzip.open(tmp_path / f"{stem}.gz", "wb") as fh:
            fh.write(b"garbage!")
    with pytest.raises(DataError, match="not an unsigned-byte IDX file"):
        load_fashion_mnist(data_dir=tmp_path)


def test_dataset_and_model_names() -> None:
    with pytest.raises(UnknownNameError, match="'mnist'.*digits.*fashion-mnist"):
        load_dataset("mnist")
    with pytest.raises(DataError, match="takes no data_dir"):
        load_dataset("digits", data_dir="/tmp")
    with pytest.raises(UnknownNameError, match="'vgg'"):
        build_model("vgg", in_channels=1, num_classes=10)
    with pytest.raises(ConfigError, match="cannot import module 'no_such_module'"):
        build_model("no_such_module:f", in_channels=1, num_classes=10)
    with pytest.raises(ConfigError, match="has no attribute 'nope'"):
        build_model("factories:nope", in_channels=1, num_classes=10)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_builtin_models_run_on_small_grayscale_images(name: str) -> None:
    model = build_model(name, in_channels=1, num_classes=7).eval()
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 7)


def test_user_model_and_dataset_factories_through_the_cli(tmp_path) -> None:
    run = tmp_path / "run"
    argv = ["search", "--model", "factories:tiny_model", "--dataset", "factories:tiny_data", "--trials", "2",
            "--finetune-steps", "1", "--bn-batches", "1", "--final-finetune-steps", "1", "--run-dir", str(run)]
    assert main(argv) == 0
    assert (run / "best_policy.json").exists()


def test_train_command_caches_the_checkpoint(capsys) -> None:
    argv = ["train", "--model", "factories:tiny_model", "--dataset", "factories:tiny_data", "--epochs", "1"]
    assert main(argv) == 0
    assert "trained checkpoint" in capsys.readouterr().out
    assert main(argv) == 0
    assert "cached checkpoint" in capsys.readouterr().out


def test_checkpoint_cache_is_keyed_by_the_data_split() -> None:
    from autoprune.evaluation.training import TrainConfig, checkpoint_path

    recipe = TrainConfig(epochs=1)
    paths = {checkpoint_path("small_cnn", load_digits(seed=s, batch_size=b), recipe) for s, b in [(0, 64), (1, 64),
                                                                                                     (0, 32)]}
    assert len(paths) == 3


def test_batch_size_larger_than_the_split_is_rejected() -> None:
    with pytest.raises(DataError, match=r"batch_size must be an integer in \[1, "):
        load_digits(batch_size=5000)


def _weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [t.detach().clone() for t in model.state_dict().values()]


def test_a_seeded_build_draws_the_same_weights_whatever_the_global_generator_holds() -> None:
    torch.manual_seed(1)
    first = build_model("resnet20", in_channels=1, num_classes=10, seed=0)
    torch.manual_seed(2)
    after = torch.get_rng_state()
    second = build_model("resnet20", in_channels=1, num_classes=10, seed=0)
    assert torch.equal(torch.get_rng_state(), after)  # the caller's generator is left as it was
    assert all(torch.equal(a, b) for a, b in zip(_weights(first), _weights(second), strict=True))
    other = build_model("resnet20", in_channels=1, num_classes=10, seed=1)
    assert not all(torch.equal(a, b) for a, b in zip(_weights(first), _weights(other), strict=True))


def test_the_same_recipe_trains_the_same_baseline_in_any_generator_state(tmp_path, monkeypatch) -> None:
    from autoprune.composition.config import SearchConfig, load_model_and_data
    from autoprune.evaluation.training import TrainConfig

    config = SearchConfig(model="small_cnn", dataset="digits", train=TrainConfig(epochs=1))
    trained = []
    for state in (3, 4):  # a fresh cache each time: both are trained, from whatever the process drew before
        monkeypatch.setenv("AUTOPRUNE_CACHE", str(tmp_path / str(state)))
        torch.manual_seed(state)
        model, _, info = load_model_and_data(config)
        assert info["trained_now"]
        trained.append(_weights(model))
    assert all(torch.equal(a, b) for a, b in zip(*trained, strict=True))
