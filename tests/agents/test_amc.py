from __future__ import annotations

import math
import tempfile

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import autoprune as ap
from agents.amc import AMCSearcher
from agents.pruning_env import N_FEATURES, PruningEnv
from autoprune import Budget, CostModel
from autoprune.builtins.models import mobilenet_v2, resnet20, small_cnn
from autoprune.builtins.registry import searcher_class
from autoprune.searcher import SearchContext
from autoprune.trial import Score
from search_spaces import SearchSpace
from search_spaces.cost import uniform_ratios
from search_spaces.ground.errors import ConfigError

SPACES = {
    "small_cnn": SearchSpace.from_model(small_cnn(), torch.zeros(1, 1, 8, 8)),
    "resnet20": SearchSpace.from_model(resnet20(), torch.zeros(1, 3, 16, 16), round_to=1),  # fits reach 0.5
    "mobilenet_v2": SearchSpace.from_model(mobilenet_v2(), torch.zeros(1, 3, 16, 16), preset="mobilenet_v2"),
}


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(sorted(SPACES)),
    metric=st.sampled_from(["flops", "params"]),
    slack=st.floats(0.0, 1.0),
    data=st.data(),
)
def test_legal_action_clamp_never_yields_an_infeasible_policy(name, metric, slack, data) -> None:
    space = SPACES[name]
    cost_model = CostModel(space)
    floor = cost_model.ratio(space.max_ratios, Budget.from_dict({metric: 1.0}))
    budget = Budget.from_dict({metric: min(1.0, floor + slack * (1 - floor) + 1e-9)})
    env = PruningEnv(cost_model, budget)
    observation, _ = env.reset()
    done, info = False, {}
    while not done:
        assert observation.shape == (N_FEATURES,) and env.observation_space.contains(observation)
        action = data.draw(st.floats(0.0, 1.0))
        observation, reward, done, _, info = env.step(np.array([action], dtype=np.float32))
        assert reward == 0.0
    ratios = info["ratios"]
    assert cost_model.feasible(ratios, budget)
    assert all(0 <= ratios[g.name] <= g.max_ratio for g in space)
    space.policy(ratios)


def _context(space, budget, seed=0, **extra):
    return SearchContext(space=space, budget=budget, cost_model=CostModel(space), seed=seed, **extra)


def _best_distance(searcher, space, target, episodes: int) -> float:
    best = math.inf
    for _ in range(episodes):
        trial = searcher.ask()
        distance = float(np.sqrt(np.mean((np.array(trial.policy.vector(space.names)) - target) ** 2)))
        best = min(best, distance)
        searcher.tell(trial, Score(1 - distance, 0.0, 1, 1, True, 0, 0.0))
    return best


@pytest.mark.slow  # 200 DDPG episodes and updates: the longest test of the fast suite (make test runs it)
def test_ddpg_learns_a_known_optimum_better_than_random_search() -> None:
    """Toy evaluator: reward peaks at a known ratio vector; same number of evaluations for both."""
    space = SPACES["resnet20"]
    target = np.array([0.1 + 0.6 * (i % 4) / 3 for i in range(len(space))]) * np.array(
        [g.max_ratio for g in space]
    )
    budget = Budget.flops(1.0)  # no constraint: the optimum is reachable
    amc = AMCSearcher(warmup=30, hidden=[64, 64], fit="none")  # no budget to fit onto, as for random
    amc.setup(_context(space, budget))
    rand = searcher_class("random")(fit="none")
    rand.setup(_context(space, budget))
    amc_best = _best_distance(amc, space, target, 200)
    random_best = _best_distance(rand, space, target, 200)
    assert amc_best < 0.8 * random_best, (amc_best, random_best)


def test_the_first_episodes_replay_the_uniform_and_global_policies() -> None:
    model, inputs = resnet20(), torch.zeros(1, 3, 16, 16)
    space, budget = SPACES["resnet20"], Budget.flops(0.5)
    context = _context(space, budget, model=model, example_inputs=inputs)
    agent = AMCSearcher(warmup=4)
    agent.setup(context)
    global_ = searcher_class("global")()
    global_.setup(context)
    starts = [uniform_ratios(CostModel(space), budget), dict(global_.ask().policy)]
    for start in starts:
        trial = agent.ask()
        assert np.allclose([trial.policy[n] for n in space.names], [start[n] for n in space.names], atol=1e-6)
    assert AMCSearcher(warm_start=["uniform"]).warm_start == ("uniform",)
    agent = AMCSearcher(warm_start=False)
    agent.setup(context)
    assert agent._starts == []


@pytest.mark.parametrize("fit", ["budget", "none"])
def test_episodes_use_the_budget_and_store_the_evaluated_policy(fit) -> None:
    space = SPACES["resnet20"]
    budget = Budget.flops(0.5)
    cost_model = CostModel(space)
    agent = AMCSearcher(warmup=4, fit=fit, warm_start=False)
    agent.setup(_context(space, budget))
    used = []
    for _ in range(4):
        trial = agent.ask()
        ratios = dict(trial.policy)
        assert cost_model.feasible(ratios, budget)
        used.append(cost_model.ratio(ratios, budget))
        # the transitions waiting for the score are those of the policy evaluated
        stored = [a * g.max_ratio for a, g in zip(agent._episodes[trial.id].actions, space, strict=True)]
        assert np.allclose(stored, [ratios[g.name] for g in space], atol=1e-6)
    if fit == "budget":
        assert min(used) > 0.49  # on the boundary: no budget left unused
    else:
        assert min(used) < 0.45  # random warm-up episodes, as played, over-prune


def test_noise_schedule_rewards_and_options() -> None:
    agent = AMCSearcher(warmup=3, sigma=0.5, sigma_decay=0.9, reward="accuracy_guaranteed")
    agent.setup(_context(SPACES["small_cnn"], Budget.flops(0.5)))
    assert agent.current_sigma() == 0.5
    for _ in range(5):
        agent.ask()
    assert agent.current_sigma() == pytest.approx(0.5 * 0.9**2)
    assert agent.episode_reward(0.9, 1000) == pytest.approx(-0.1 * math.log(1000))
    assert AMCSearcher().episode_reward(0.9, 1000) == 0.9
    for options, match in [({"algorithm": "ppo"}, "'ppo'.*ddpg, td3"), ({"reward": "loss"}, "'loss'"),
                           ({"warmup": -1}, "warmup"), ({"sigma_decay": 0}, "sigma_decay"),
                           ({"learning_rate": "fast"}, "learning_rate"), ({"hidden": [0]}, "hidden layer size"),
                           ({"updates_per_episode": -3}, "updates_per_episode"),
                           ({"tau": 2}, r"tau must be in \(0, 1\]"), ({"fit": "repair"}, "budget, none"),
                           ({"fit": "tight"}, "'tight'")]:
        with pytest.raises(ConfigError, match=match):
            AMCSearcher(**options)


def test_td3_variant_trains() -> None:
    agent = AMCSearcher(algorithm="td3", warmup=1, batch_size=4, hidden=[16])
    agent.setup(_context(SPACES["small_cnn"], Budget.flops(0.5)))
    for _ in range(3):
        trial = agent.ask()
        agent.tell(trial, Score(0.5, 1.0, 1, 1, True, 0, 0.0))
    assert agent.agent._n_updates > 0


def test_the_agent_writes_no_log_folder(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.delenv("SB3_LOGDIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", None)
    agent = AMCSearcher(warmup=1, batch_size=4, hidden=[16])
    agent.setup(_context(SPACES["small_cnn"], Budget.flops(0.5)))
    trial = agent.ask()
    agent.tell(trial, Score(0.5, 1.0, 1, 1, True, 0, 0.0))
    assert list(tmp_path.iterdir()) == []


def test_amc_search_resumes_with_its_networks_and_replay_buffer(trained_cnn, digits, tmp_path) -> None:
    options = dict(budget=ap.Budget.flops(0.5), train_data=digits.train, val_data=digits.val, searcher="amc",
                   searcher_options={"warmup": 1, "batch_size": 4, "hidden": [16, 16]},
                   evaluator={"bn_batches": 1, "finetune_steps": 1, "val_batches": 1},
                   final={"measure_latency": False})
    run = tmp_path / "run"
    ap.search(trained_cnn, digits.example_inputs(), trials=3, **options, run={"dir": run})
    resumed = ap.search(trained_cnn, digits.example_inputs(), trials=5, **options, run={"dir": run, "resume": True})
    straight = ap.search(trained_cnn, digits.example_inputs(), trials=5, **options)
    ratio_cols = [c for c in straight.trials.columns if c.startswith("ratio:")]
    assert len(resumed.trials) == 5
    assert np.allclose(resumed.trials[ratio_cols].to_numpy(), straight.trials[ratio_cols].to_numpy())
    assert resumed.trials["feasible"].all()


def test_rewards_are_stored_raw_and_the_baseline_moves_per_sampled_batch() -> None:
    agent = AMCSearcher(warmup=0, batch_size=4, hidden=[8])
    agent.setup(_context(SPACES["small_cnn"], Budget.flops(0.5)))
    for accuracy in (0.5, 0.7, 0.5):
        trial = agent.ask()
        agent.tell(trial, Score(accuracy, 1.0, 1, 1, True, 0, 0.0))
    buffer = agent.agent.replay_buffer
    stored = sorted({round(float(r), 6) for r in buffer.rewards[: buffer.size()].ravel()})
    assert stored == [0.5, 0.7]  # raw accuracies, equal rewards stay equal
    before = buffer.baseline
    batch = buffer.sample(4)
    mean = float((batch.rewards + buffer.baseline).mean())
    assert buffer.baseline == pytest.approx(before + 0.5 * (mean - before))


def test_state_dict_is_a_snapshot_and_low_fidelity_scores_are_not_learned_from() -> None:
    context = SearchContext(space=SPACES["small_cnn"], budget=Budget.flops(0.5),
                            cost_model=CostModel(SPACES["small_cnn"]), seed=0, full_fidelity=9)
    agent = AMCSearcher(warmup=0, batch_size=4, hidden=[8])
    agent.setup(context)
    trial = agent.ask()
    agent.tell(trial, Score(0.5, 1.0, 1, 1, True, 9, 0.0))
    state = agent.state_dict()
    saved_size = state["replay_buffer"]["pos"]
    weights = {k: v.clone() for k, v in state["policy"].items()}
    for fidelity in (9, 1):
        trial = agent.ask()
        agent.tell(trial, Score(0.6, 1.0, 1, 1, True, fidelity, 0.0))
    assert state["replay_buffer"]["pos"] == saved_size  # the snapshot did not grow with the agent
    assert all(torch.equal(weights[k], v) for k, v in state["policy"].items())
    assert agent.agent.replay_buffer.size() == 2 * saved_size  # the fidelity-1 episode was skipped
