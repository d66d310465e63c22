"""Element-wise (unstructured) pruning: the element space and its budgets, masks, the sparse export, the sparsity
report, every searcher on the element space, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

import autoprune as ap
from autoprune.builtins.data import DataBundle
from autoprune.builtins.models import small_cnn
from autoprune.cli.main import main
from autoprune.prune.channels import prune
from autoprune.prune.export import save_pruned_model
from autoprune.prune.masks import apply_masks
from autoprune.prune.sparse_format import FORMAT, decode, encode, load_sparse
from search_spaces.cost import CostModel, uniform_ratios
from search_spaces.ground.errors import BudgetError, ConfigError, PolicyError, RunDirError
from search_spaces.measure import count_nonzeros, count_sparse_bytes


def _small() -> nn.Module:
    return small_cnn(in_channels=1)


def _no_zeros(model: nn.Module) -> nn.Module:
    """Every parameter non-zero (a fresh BatchNorm's biases are exactly zero), so counts are exact."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.where(p == 0, torch.full_like(p, 0.01), torch.zeros_like(p)))
    return model


@pytest.fixture()
def element_problem(trained_cnn: nn.Module, cnn_inputs: torch.Tensor) -> tuple[nn.Module, ap.SearchSpace]:
    return trained_cnn, ap.SearchSpace.from_model(trained_cnn, cnn_inputs, granularity="element")


def test_an_element_space_has_one_entry_per_weight_tensor_with_its_element_count(element_problem) -> None:
    model, space = element_problem
    weights = {n: m.weight.numel() for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert space.granularity == "element"
    assert {g.name: g.channels for g in space} == weights  # the output layer too: masks never change a shape
    assert space.fingerprint["granularity"] == "element"
    assert all(g.max_ratio == pytest.approx(0.99, abs=1e-6) for g in space)
    assert "weight tensors" in repr(space)


def test_the_cost_model_predicts_nonzeros_and_sparse_bytes_exactly(cnn_inputs: torch.Tensor) -> None:
    model = _no_zeros(_small())
    space = ap.SearchSpace.from_model(model, cnn_inputs, granularity="element")
    cost_model = CostModel(space)
    for sparsity in (0.3, 0.7, 0.95):
        policy = space.policy({g.name: min(sparsity, g.max_ratio) for g in space})
        pruned = prune(model, policy, cnn_inputs, space=space).model
        predicted = cost_model.cost(policy)
        assert predicted.nonzeros == count_nonzeros(pruned)
        assert predicted.sparse_bytes == count_sparse_bytes(pruned)
        assert predicted.flops == cost_model.base.flops and predicted.params == cost_model.base.params


def test_masks_come_from_torch_nn_utils_prune_and_fold_into_plain_weights(element_problem, cnn_inputs) -> None:
    model, space = element_problem
    policy = space.policy({g.name: 0.5 for g in space})
    pruned = prune(model, policy, cnn_inputs, space=space).model
    layer = space.names[0]
    module = dict(pruned.named_modules())[layer]
    assert torch.nn.utils.prune.is_pruned(module) and hasattr(module, "weight_mask")
    kept = space[layer].kept_channels(0.5)
    assert int(module.weight_mask.sum()) == kept
    ap.make_permanent(pruned)
    assert not torch.nn.utils.prune.is_pruned(module) and int(torch.count_nonzero(module.weight)) <= kept
    assert not any(name.endswith("_orig") for name in pruned.state_dict())
    assert not torch.nn.utils.prune.is_pruned(dict(model.named_modules())[layer])  # the original is untouched


def test_magnitude_masks_remove_the_smallest_weights(cnn_inputs: torch.Tensor) -> None:
    model = _no_zeros(_small())
    name, module = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    threshold = module.weight.detach().abs().flatten().sort().values[module.weight.numel() // 2]
    apply_masks(model, {name: module.weight.numel() - module.weight.numel() // 2})
    kept = module.weight.detach()[module.weight_mask.bool()].abs()
    assert float(kept.min()) >= float(threshold)


@pytest.mark.parametrize(("sparse", "message"), [
    ({"w": {"shape": torch.tensor([200_000_000]), "bitmask": torch.zeros(1, dtype=torch.uint8),
            "values": torch.zeros(0)}}, "shape [200000000] needs a bitmask of 25,000,000 bytes, got 1"),
    ({"w": {"shape": torch.tensor([-5]), "bitmask": torch.zeros(1, dtype=torch.uint8), "values": torch.zeros(0)}},
     "'shape' must be non-negative int64 sizes"),
    ({"w": {"shape": torch.tensor([8]), "values": torch.zeros(0)}}, "must be a mapping of tensors 'shape', 'bitmask'"),
    ({"w": 3}, "must be a mapping of tensors"),
])
def test_a_malformed_sparse_payload_is_refused_before_anything_is_allocated(sparse, message) -> None:
    with pytest.raises(RunDirError, match="x.pt") as refused:
        decode({"format": FORMAT, "dense": {}, "sparse": sparse}, source="x.pt")
    assert message in str(refused.value)


@pytest.mark.parametrize("payload", [{"format": FORMAT, "sparse": {}},
                                     {"format": FORMAT, "dense": {"w": 3}, "sparse": {}}])
def test_a_sparse_payload_without_dense_tensors_is_refused(payload) -> None:
    with pytest.raises(RunDirError, match="x.pt must hold 'dense'"):
        decode(payload, source="x.pt")


def test_the_sparse_form_reloads_bit_exactly_and_is_smaller(element_problem, cnn_inputs, tmp_path: Path) -> None:
    model, space = element_problem
    policy = space.policy({g.name: min(0.9, g.max_ratio) for g in space})
    pruned = ap.make_permanent(prune(model, policy, cnn_inputs, space=space).model)
    state = pruned.state_dict()
    again = decode(encode(state))
    assert state.keys() == again.keys() and all(torch.equal(state[k], again[k]) for k in state)

    ap.export_model(pruned, cnn_inputs, tmp_path / "dense", ["eager"], history=[])
    directory = save_pruned_model(tmp_path / "both", pruned, [], sparse=True)
    sizes = json.loads((directory / "meta.json").read_text())["sizes"]
    assert sizes["sparse_bytes"] < sizes["dense_bytes"] and sizes["sparse_gzip_bytes"] < sizes["dense_gzip_bytes"]
    assert sizes["sparse_bytes"] == (directory / "sparse_state_dict.pt").stat().st_size  # measured, not estimated
    (directory / "pruned_state_dict.pt").unlink()  # the sparse form alone loads
    fresh = _small()
    ap.load_pruned_model(fresh, directory, cnn_inputs)
    loaded = fresh.state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    with torch.no_grad():
        assert torch.equal(fresh.eval()(torch.ones(4, 1, 8, 8)), pruned.eval()(torch.ones(4, 1, 8, 8)))


def test_a_corrupt_sparse_file_is_refused_with_its_name(tmp_path: Path) -> None:
    bad = tmp_path / "sparse_state_dict.pt"
    torch.save({"format": "something else"}, bad)
    with pytest.raises(RunDirError, match="not an autoprune sparse state dict"):
        load_sparse(bad)
    bad.write_bytes(b"not a zip file")
    with pytest.raises(RunDirError, match="sparse_state_dict.pt"):
        load_sparse(bad)


def test_the_sparsity_report_counts_every_tensor_and_totals(element_problem, cnn_inputs) -> None:
    model, space = element_problem
    policy = space.policy({g.name: 0.5 for g in space})
    pruned = prune(model, policy, cnn_inputs, space=space).model
    report = ap.sparsity_report(pruned)
    weights = report[~report["tensor"].isin(["total", "(other parameters)"])]
    assert len(weights) == len(space)
    total = report[report["tensor"] == "total"].iloc[0]
    assert total["numel"] == sum(p.numel() for p in model.parameters())
    assert total["nonzeros"] == count_nonzeros(pruned)
    assert total["density"] == pytest.approx(total["nonzeros"] / total["numel"])
    assert report["share"].iloc[:-1].sum() == pytest.approx(1.0)
    for row in weights.itertuples():
        assert row.nonzeros <= space[row.tensor.removesuffix(".weight")].kept_channels(0.5)
        assert row.sparsity == pytest.approx(1 - row.density)
    # a state dict gives the same table (BatchNorm statistics are not parameters)
    from_state = ap.sparsity_report(ap.make_permanent(pruned).state_dict())
    pd.testing.assert_frame_equal(from_state, report)


def test_the_sparsity_command_prints_the_table_and_sizes(element_problem, cnn_inputs, tmp_path, capsys) -> None:
    model, space = element_problem
    pruned = ap.make_permanent(prune(model, space.policy({g.name: 0.8 for g in space}), cnn_inputs,
                                     space=space).model)
    directory = save_pruned_model(tmp_path / "model", pruned, [], sparse=True)
    assert main(["sparsity", str(directory), "--csv", str(tmp_path / "s.csv")]) == 0
    printed = capsys.readouterr().out
    assert "total" in printed and "sparse form" in printed and "gzip" in printed
    table = pd.read_csv(tmp_path / "s.csv")
    assert table["tensor"].iloc[-1] == "total" and table["nonzeros"].iloc[-1] == count_nonzeros(pruned)
    assert main(["sparsity", str(tmp_path / "nothing-here")]) != 0
    assert "nothing-here" in capsys.readouterr().err


@pytest.mark.parametrize("searcher", ["uniform", "global", "random", "sensitivity", "optuna", "amc"])
def test_every_searcher_searches_an_element_space_under_a_nonzeros_budget(
    searcher: str, trained_cnn: nn.Module, digits: DataBundle, tmp_path: Path
) -> None:
    options = {"levels": [1.0]} if searcher == "sensitivity" else {}
    result = ap.search(
        trained_cnn,
        digits.example_inputs(),
        budget=ap.Budget.nonzeros(0.2),
        train_data=digits.train,
        val_data=digits.val,
        searcher=searcher,
        searcher_options=options,
        trials=8,
        evaluator={"bn_batches": 1, "finetune_steps": 1, "val_batches": 1},
        space={"granularity": "element"},
        final={"steps": 1, "measure_latency": False},
        run={"dir": tmp_path / "run"},
    )
    assert result.best_policy.fingerprint["granularity"] == "element"
    assert result.summary.pruned.nonzeros <= 0.2 * sum(p.numel() for p in trained_cnn.parameters())
    assert result.summary.flops_ratio == 1.0  # dense kernels: the zeros are still multiplied
    assert (tmp_path / "run" / "model" / "sparse_state_dict.pt").is_file()
    assert result.trials["nonzeros_ratio"].dropna().between(0, 1).all()


def test_a_budget_is_checked_against_the_granularity_it_can_steer(trained_cnn, digits, tmp_path: Path, capsys) -> None:
    inputs, fast = digits.example_inputs(), {"bn_batches": 1, "finetune_steps": 0, "val_batches": 1}
    common = {"train_data": digits.train, "val_data": digits.val, "searcher": "uniform", "trials": 1,
              "evaluator": fast, "final": {"measure_latency": False}}
    space = ap.SearchSpace.from_model(trained_cnn, inputs, granularity="element")
    result = ap.search(trained_cnn, inputs, budget=ap.Budget.nonzeros(0.5), space=space, **common)
    assert result.best_policy.fingerprint["granularity"] == "element"  # the given space's granularity counts
    with pytest.raises(BudgetError, match="latency budget needs channels removed.*'channel', not 'element'"):
        ap.search(trained_cnn, inputs, budget=ap.Budget.latency(0.5), **common, space={"granularity": "element"})
    config = tmp_path / "nonzeros.yaml"
    config.write_text("budget: {nonzeros: 0.5}\nsearcher: uniform\ntrials: 1\nfinal_finetune_steps: 0\n")
    argv = ["search", str(config), "--bn-batches", "1", "--finetune-steps", "0", "--run-dir", str(tmp_path / "cli")]
    assert main(argv) == 2
    assert "--granularity element on the command line" in capsys.readouterr().err.replace("\n", "")
    assert not (tmp_path / "cli").exists()
    assert main([*argv, "--granularity", "element"]) == 0  # the flag completes the file's budget


def test_a_size_budget_is_met_by_the_exported_sparse_weights(trained_cnn, digits, tmp_path: Path) -> None:
    base_bytes = 4 * sum(p.numel() for p in trained_cnn.parameters())
    result = ap.search(
        trained_cnn,
        digits.example_inputs(),
        budget=ap.Budget.size(0.4),
        train_data=digits.train,
        val_data=digits.val,
        searcher="uniform",
        trials=1,
        evaluator={"bn_batches": 1, "finetune_steps": 0, "val_batches": 1},
        space={"granularity": "element"},
        final={"measure_latency": False},
    )
    assert count_sparse_bytes(result.pruned_model) <= 0.4 * base_bytes


def test_bad_element_input_names_the_value(element_problem, trained_cnn, cnn_inputs) -> None:
    model, space = element_problem
    with pytest.raises(PolicyError, match="1.0"):
        ap.Policy({space.names[0]: 1.0})
    with pytest.raises(PolicyError, match="no_such_layer"):
        ap.Policy({**{n: 0.5 for n in space.names}, "no_such_layer": 0.5}, fingerprint=space.fingerprint
                  ).validate(space)
    channel_space = ap.SearchSpace.from_model(model, cnn_inputs)
    structured = channel_space.policy({n: 0.3 for n in channel_space.names})
    with pytest.raises(PolicyError, match="granularity 'channel'.*prunes elements"):
        prune(model, structured, cnn_inputs, space=space)
    elementwise = space.policy({n: 0.3 for n in space.names})
    with pytest.raises(PolicyError, match="granularity 'element'.*prunes channels"):
        prune(model, elementwise, cnn_inputs, space=channel_space)
    with pytest.raises(ConfigError, match="'rows'"):
        ap.SearchSpace.from_model(model, cnn_inputs, granularity="rows")
    with pytest.raises(ConfigError, match="round_to=4"):
        ap.SearchSpace.from_model(model, cnn_inputs, granularity="element", round_to=4)
    with pytest.raises(BudgetError, match="budget fraction must be in \\(0, 1\\], got 1.5"):
        ap.Budget.nonzeros(1.5)
    with pytest.raises(BudgetError, match="flops"):  # FLOPs never drop with element sparsity
        CostModel(space).check_reachable(ap.Budget.flops(0.5))
    with pytest.raises(ConfigError, match="'taylor'"):
        prune(model, elementwise, cnn_inputs, space=space, importance="taylor")


def test_uniform_gives_every_tensor_one_sparsity_that_meets_the_budget(element_problem) -> None:
    _, space = element_problem
    cost_model = CostModel(space)
    ratios = uniform_ratios(cost_model, ap.Budget.nonzeros(0.3))
    assert len({round(r, 9) for r in ratios.values()}) == 1  # one sparsity for every tensor
    assert cost_model.feasible(ratios, ap.Budget.nonzeros(0.3))


def test_apply_writes_an_element_policy_in_the_sparse_format(trained_cnn, digits, tmp_path, capsys) -> None:
    checkpoint, out = tmp_path / "cnn.pt", tmp_path / "pruned"
    torch.save(trained_cnn.state_dict(), checkpoint)
    space = ap.SearchSpace.from_model(trained_cnn, digits.example_inputs(), granularity="element")
    space.policy([0.8] * len(space)).save(tmp_path / "p.json")
    assert main(["apply", str(tmp_path / "p.json"), "--checkpoint", str(checkpoint), "--out", str(out),
                 "--format", "eager,sparse"]) == 0
    assert "sparse: " in capsys.readouterr().out
    (out / "pruned_state_dict.pt").unlink()
    model = ap.load_pruned_model(_small(), out, digits.example_inputs())  # from the sparse form alone
    kept = {n: space[n].kept_channels(0.8) for n in space.names}
    modules = dict(model.named_modules())
    assert all(int(torch.count_nonzero(modules[n].weight)) <= k for n, k in kept.items())
    assert main(["sparsity", str(out)]) == 0 and "total" in capsys.readouterr().out


def test_apply_policy_returns_plain_weights_with_zeros(element_problem, cnn_inputs) -> None:
    model, space = element_problem
    policy = space.policy({g.name: 0.6 for g in space})
    pruned = ap.apply_policy(model, policy, cnn_inputs)
    assert not any(torch.nn.utils.prune.is_pruned(m) for m in pruned.modules())
    assert count_nonzeros(pruned) <= CostModel(space).cost(policy).nonzeros
