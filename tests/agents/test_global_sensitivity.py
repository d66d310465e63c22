from __future__ import annotations

import pandas as pd
import pytest
import torch
import torch_pruning as tp

import autoprune as ap
from agents.global_magnitude import GlobalSearcher, threshold_allocation
from agents.sensitivity import allocate
from autoprune import Budget, CostModel
from autoprune.builtins.models import resnet20
from autoprune.searcher import SearchContext
from search_spaces import SearchSpace
from search_spaces.cost import uniform_ratios
from search_spaces.ground.errors import BudgetError, ConfigError, EvaluationFailedError, RunDirError

FAST = {"bn_batches": 1, "finetune_steps": 0, "val_batches": 1}


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    model = resnet20().eval()
    for module in model.modules():  # trained BatchNorm scales differ (fresh ones are all 1: all tie)
        if isinstance(module, torch.nn.BatchNorm2d):
            module.weight.data.uniform_(0.1, 1.0)
    inputs = torch.zeros(1, 3, 16, 16)
    return model, inputs, SearchSpace.from_model(model, inputs, round_to=1)  # every width, as Torch-Pruning's


@pytest.mark.parametrize("ratio", [0.2, 0.5])
def test_global_allocation_matches_torch_pruning_global_pruning(resnet, ratio: float) -> None:
    model, inputs, space = resnet
    searcher = GlobalSearcher()
    searcher.setup(SearchContext(space=space, budget=Budget.flops(0.5), cost_model=CostModel(space), seed=0,
                                 model=model, example_inputs=inputs))
    pruner = tp.pruner.BasePruner(model, (inputs,), importance=tp.importance.MagnitudeImportance(p=1),
                                  global_pruning=True, pruning_ratio=ratio, ignored_layers=[model.fc])
    names = {m: n for n, m in model.named_modules()}
    expected = {names[g[0].dep.target.module]: pruner.DG.get_out_channels(g[0].dep.target.module) - len(g[0].idxs)
                for g in pruner.step(interactive=True)}
    assert threshold_allocation(searcher.scores, ratio) == expected
    kept = CostModel(space).kept(searcher.allocation(ratio))
    assert all(kept[n] == max(expected[n], space[n].kept_channels(space[n].max_ratio)) for n in space.names)


@pytest.mark.parametrize("importance", ["l1", "bn_scale"])
def test_global_policy_just_meets_the_budget(resnet, importance: str) -> None:
    model, inputs, space = resnet
    cost = CostModel(space)
    searcher = GlobalSearcher(importance=importance)
    searcher.setup(SearchContext(space=space, budget=Budget.flops(0.3), cost_model=cost, seed=0, model=model,
                                 example_inputs=inputs))
    policy = searcher.ask().policy
    assert 0.27 < cost.ratio(policy, Budget.flops(1.0)) <= 0.3
    assert len(set(policy.values())) > 1  # not uniform: the threshold allocates unevenly
    assert searcher.ask() is None


def test_global_needs_the_model(resnet) -> None:
    _, _, space = resnet
    with pytest.raises(ConfigError, match="model="):
        GlobalSearcher().setup(SearchContext(space=space, budget=Budget.flops(0.5), cost_model=CostModel(space),
                                             seed=0))
    with pytest.raises(ConfigError, match="'taylor'"):
        GlobalSearcher(importance="taylor")


def test_allocation_prunes_insensitive_groups_first(resnet) -> None:
    _, _, space = resnet
    cost = CostModel(space)
    sensitive = set(space.names[:6])
    rows = [{"group": g.name, "ratio": level * g.max_ratio,
             "accuracy": 0.9 - (0.5 * level if g.name in sensitive else 0.01 * level)}
            for g in space for level in (0.5, 1.0)]
    ratios = allocate(pd.DataFrame(rows), 0.9, cost, Budget.flops(0.6))
    assert cost.feasible(ratios, Budget.flops(0.6)) and cost.ratio(ratios, Budget.flops(1.0)) > 0.58
    robust_mean = sum(ratios[n] for n in space.names if n not in sensitive) / 6
    assert robust_mean > sum(ratios[n] for n in sensitive) / 6


def test_sensitivity_function_writes_table_and_plot(trained_cnn, digits, tmp_path) -> None:
    result = ap.sensitivity(trained_cnn, digits.example_inputs(), train_data=digits.train, val_data=digits.val,
                            levels=(0.5, 1.0), evaluator=FAST, run_dir=tmp_path)
    assert len(result.table) == 4 * 2 and set(result.table["group"]) == {"stem.0", "branch_a.0", "branch_b.0",
                                                                            "head.0"}
    assert 0.5 < result.baseline_accuracy <= 1
    assert pd.read_csv(result.table_path).shape == result.table.shape
    assert result.plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ConfigError, match="increasing fractions"):
        ap.sensitivity(trained_cnn, digits.example_inputs(), train_data=digits.train, val_data=digits.val,
                       levels=(1.0, 0.5))
    written = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(RunDirError, match="is not empty; a sensitivity scan writes to a new or empty directory"):
        ap.sensitivity(trained_cnn, digits.example_inputs(), train_data=digits.train, val_data=digits.val,
                       levels=(1.0,), evaluator=FAST, run_dir=tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == written


def test_sensitivity_searcher_scans_then_allocates(trained_cnn, digits, tmp_path) -> None:
    run = tmp_path / "run"
    result = ap.search(trained_cnn, digits.example_inputs(), budget=Budget.flops(0.5), train_data=digits.train,
                       val_data=digits.val, searcher="sensitivity", searcher_options={"levels": [0.5, 1.0]},
                       trials=20, evaluator=FAST, run={"dir": run}, final={"measure_latency": False},
                       space={"round_to": 1})  # every width: the allocation can come within 10% of the budget
    trials = result.trials
    assert len(trials) == 1 + 4 * 2 + 1  # unpruned probe, scan, allocation; then the searcher is done
    assert trials["feasible"].iloc[-1] and not trials["feasible"].iloc[0]
    assert 0.45 < trials["flops_ratio"].iloc[-1] <= 0.5  # the allocation just meets the budget
    assert result.best_policy is not None  # the best feasible trial: the allocation or a feasible probe
    assert (run / "sensitivity.csv").exists() and (run / "sensitivity.png").exists()
    with pytest.raises(ConfigError, match="at least 6 trials"):
        ap.search(trained_cnn, digits.example_inputs(), budget=Budget.flops(0.5), train_data=digits.train,
                  val_data=digits.val, searcher="sensitivity", trials=5, evaluator=FAST)


def test_sensitivity_under_the_cascade_scans_screens_and_finetunes_its_allocation(trained_cnn, digits) -> None:
    result = ap.search(trained_cnn, digits.example_inputs(), budget=Budget.flops(0.5), train_data=digits.train,
                       val_data=digits.val, searcher="sensitivity", searcher_options={"levels": [0.5, 1.0]},
                       trials=20, evaluator={**FAST, "finetune_steps": 3}, run={"scheduler": "cascade"},
                       final={"measure_latency": False, "rescore": 0}, space={"round_to": 1})
    trials = result.trials
    assert (trials["fidelity"][~trials["feasible"]] == 0).all()  # over the budget: screened, never finetuned
    assert trials["feasible"].iloc[-1] and trials["first_accuracy"].notna().all()  # allocated from the screens
    best = trials[trials["trial_id"] == result.summary.best_trial_id].iloc[0]
    assert best["feasible"] and best["fidelity"] == 3  # a feasible candidate, scored fully


def test_allocation_skips_failed_probes_and_needs_a_baseline(resnet) -> None:
    _, _, space = resnet
    cost = CostModel(space)
    rows = [{"group": g.name, "ratio": level * g.max_ratio,
             "accuracy": float("nan") if (i == 0 and level == 0.5) else 0.9 - 0.1 * level}
            for i, g in enumerate(space) for level in (0.5, 1.0)]
    ratios = allocate(pd.DataFrame(rows), 0.9, cost, Budget.flops(0.3))
    assert cost.feasible(ratios, Budget.flops(0.3))
    with pytest.raises(EvaluationFailedError, match="unpruned probe"):
        allocate(pd.DataFrame(rows), float("nan"), cost, Budget.flops(0.3))


def test_allocation_reaches_a_budget_beyond_the_scanned_levels(resnet) -> None:
    """The scan went only halfway to each max ratio: the allocation still meets a budget that needs more."""
    _, _, space = resnet
    cost = CostModel(space)
    rows = [{"group": g.name, "ratio": 0.5 * g.max_ratio, "accuracy": 0.8} for g in space]
    half = cost.ratio({g.name: 0.5 * g.max_ratio for g in space}, Budget.flops(1.0))
    budget = Budget.flops((half + cost.ratio(space.max_ratios, Budget.flops(1.0))) / 2)
    ratios = allocate(pd.DataFrame(rows), 0.9, cost, budget)
    assert cost.feasible(ratios, budget) and all(ratios[g.name] >= 0.5 * g.max_ratio for g in space)
    # it continues from the scanned allocation and uses the budget no worse than one common ratio would
    assert cost.ratio(ratios, Budget.flops(1.0)) >= cost.ratio(uniform_ratios(cost, budget), Budget.flops(1.0))
    with pytest.raises(BudgetError, match="cannot be met"):
        allocate(pd.DataFrame(rows), 0.9, cost, Budget.flops(0.5 * cost.ratio(space.max_ratios, Budget.flops(1.0))))


def test_bn_scale_on_a_model_without_batchnorm_is_a_clear_error() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3),
                                torch.nn.Flatten(), torch.nn.LazyLinear(2))
    inputs = torch.zeros(1, 3, 8, 8)
    model(inputs)
    space = SearchSpace.from_model(model, inputs)
    with pytest.raises(ConfigError, match="bn_scale needs a BatchNorm"):
        GlobalSearcher(importance="bn_scale").setup(SearchContext(
            space=space, budget=Budget.flops(0.5), cost_model=CostModel(space), seed=0, model=model,
            example_inputs=inputs))
