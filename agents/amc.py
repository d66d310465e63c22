"""AMC (He et al., ECCV 2018): a DDPG agent (stable-baselines3) that chooses each group's ratio in turn.

Each ``ask()`` plays one episode of :class:`PruningEnv`: first the hand-made baselines' policies (uniform,
global magnitude; ``warm_start``) replayed as actions, then the current actor (random actions during
warm-up, then the actor's action plus truncated-normal noise whose sigma decays per episode). An episode
that leaves budget unused is scaled onto the budget's boundary (``fit``) and replayed through the env, so
the stored transitions are those of the policy actually evaluated. The
episode's transitions wait, keyed by trial id, until ``tell()`` brings its score; then every transition
gets the episode's reward (discount 1, as in AMC) and goes into SB3's replay buffer, and the agent trains.
As in AMC's reference code, rewards are stored raw and a moving average of sampled batch means is
subtracted from each training batch. Several episodes may be out at once and come back in any order.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.stats import truncnorm
from stable_baselines3 import DDPG, TD3
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.type_aliases import ReplayBufferSamples

from agents.pruning_env import PruningEnv
from agents.starts import check_starts, starting_ratios
from autoprune.searcher import SearchContext, SeededSearcher
from autoprune.trial import Trial
from search_spaces.ground.errors import ConfigError
from search_spaces.ground.options import check_int, check_number
from search_spaces.policy import Policy

REWARDS = ("accuracy", "accuracy_guaranteed")
ALGORITHMS = {"ddpg": DDPG, "td3": TD3}


@dataclass
class _Episode:
    observations: list[np.ndarray] = field(default_factory=list)
    actions: list[float] = field(default_factory=list)
    next_observations: list[np.ndarray] = field(default_factory=list)


class BaselineReplayBuffer(ReplayBuffer):
    """SB3's replay buffer that subtracts AMC's moving baseline from each sampled batch's rewards.

    The baseline moves toward every sampled batch's mean reward by ``baseline_alpha`` before it is
    subtracted (AMC's ``update_policy``), so stored rewards stay raw and comparable across episodes.
    """

    def __init__(self, *args: Any, baseline_alpha: float = 0.5, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.baseline_alpha = baseline_alpha
        self.baseline: float | None = None

    def sample(self, batch_size: int, env: Any = None) -> ReplayBufferSamples:
        samples = super().sample(batch_size, env)
        mean = float(samples.rewards.mean())
        self.baseline = mean if self.baseline is None else self.baseline + self.baseline_alpha * (mean - self.baseline)
        return samples._replace(rewards=samples.rewards - self.baseline)


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed numpy's and torch's global generators for SB3's sampling, and restore them afterwards."""
    numpy_state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        np.random.seed(seed)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            np.random.set_state(numpy_state)


class AMCSearcher(SeededSearcher):
    """AMC's DDPG agent on stable-baselines3.

    Args:
        algorithm: ``ddpg`` (AMC) or ``td3``.
        reward: ``accuracy`` (budget-constrained, default) or ``accuracy_guaranteed`` (``-error * log(FLOPs)``).
        warmup: episodes of uniformly random actions before the actor acts (AMC: 100).
        sigma: initial exploration noise (AMC: 0.5); decays as ``sigma * sigma_decay ** (episode - warmup)``.
        sigma_decay: per-episode noise decay (AMC: 0.95).
        baseline_alpha: step of the moving-average reward baseline toward each batch's mean (AMC: 0.5).
        hidden: hidden layer sizes of actor and critic (AMC: 300, 300).
        learning_rate: Adam learning rate of actor and critic (SB3 uses one for both; AMC used 1e-4 for
            the actor and 1e-3 for the critic).
        batch_size: replay batch size (AMC: 64).
        buffer_size: replay buffer capacity in transitions.
        tau: target network soft-update rate (AMC: 0.01).
        updates_per_episode: gradient steps per finished episode (default: one per group, as AMC).
        warm_start: the first episodes replay these policies: ``uniform`` and ``global`` (True, default), a
            list of them, or none; they count toward ``warmup``.
        fit: ``budget`` (default): an episode with slack is scaled onto the budget's boundary, since unused
            budget is lost accuracy; ``none``: AMC's episodes as played (the clamp alone keeps them feasible).
    """

    name = "amc"

    def __init__(
        self,
        *,
        algorithm: str = "ddpg",
        reward: str = "accuracy",
        warmup: int = 100,
        sigma: float = 0.5,
        sigma_decay: float = 0.95,
        baseline_alpha: float = 0.5,
        hidden: tuple[int, ...] | list[int] = (300, 300),
        learning_rate: float = 1e-3,
        batch_size: int = 64,
        buffer_size: int = 20000,
        tau: float = 0.01,
        updates_per_episode: int | None = None,
        warm_start: bool | list[str] = True,
        fit: str = "budget",
    ) -> None:
        super().__init__()
        if algorithm not in ALGORITHMS:
            raise ConfigError(f"amc algorithm {algorithm!r} is not accepted; accepted: {', '.join(ALGORITHMS)}")
        if reward not in REWARDS:
            raise ConfigError(f"amc reward {reward!r} is not accepted; accepted: {', '.join(REWARDS)}")
        check_int("amc warmup", warmup, low=0)
        check_int("amc batch_size", batch_size, low=1)
        check_int("amc buffer_size", buffer_size, low=1)
        if updates_per_episode is not None:
            check_int("amc updates_per_episode", updates_per_episode, low=1)
        check_number("amc sigma", sigma, low=0)
        check_number("amc learning_rate", learning_rate, low=0, inclusive=False)
        for key, value in {"sigma_decay": sigma_decay, "baseline_alpha": baseline_alpha, "tau": tau}.items():
            check_number(f"amc {key}", value, low=0, inclusive=False)
            if value > 1:
                raise ConfigError(f"amc {key} must be in (0, 1], got {value!r}")
        if not isinstance(hidden, (list, tuple)) or not hidden:
            raise ConfigError(f"amc hidden must be a non-empty list of layer sizes, got {hidden!r}")
        for size in hidden:
            check_int("amc hidden layer size", size, low=1)
        self.algorithm, self.reward = algorithm, reward
        self.warmup, self.sigma, self.sigma_decay = warmup, float(sigma), float(sigma_decay)
        self.baseline_alpha = float(baseline_alpha)
        self.hidden = [int(h) for h in hidden]
        self.learning_rate = float(learning_rate)
        self.batch_size, self.buffer_size, self.tau = batch_size, buffer_size, float(tau)
        self.updates_per_episode = updates_per_episode
        if fit not in ("budget", "none"):  # episodes are always feasible: nothing to repair
            raise ConfigError(f"amc searcher fit={fit!r} is not accepted; accepted: budget, none")
        self.fit = fit
        self.warm_start = check_starts(warm_start, "amc")
        self._episodes: dict[int, _Episode] = {}
        self._asked = 0
        self._told = 0

    def _setup(self, context: SearchContext) -> None:
        super()._setup(context)
        self.env = PruningEnv(context.cost_model, context.budget)
        self._starts = starting_ratios(context, self.warm_start)
        with _seeded(context.seed):
            self.agent = ALGORITHMS[self.algorithm](
                "MlpPolicy", self.env, learning_rate=self.learning_rate, buffer_size=self.buffer_size,
                learning_starts=0, batch_size=self.batch_size, tau=self.tau, gamma=1.0,
                replay_buffer_class=BaselineReplayBuffer,
                replay_buffer_kwargs={"baseline_alpha": self.baseline_alpha},
                policy_kwargs={"net_arch": list(self.hidden)}, seed=context.seed, device="cpu", verbose=0,
            )
        # SB3's configure() makes a tempdir/SB3-<time> folder even with no outputs; a bare Logger makes none.
        self.agent.set_logger(Logger(folder=None, output_formats=[]))

    # -- acting -------------------------------------------------------------------------------------
    def current_sigma(self) -> float:
        """The exploration noise of the next episode."""
        return self.sigma * self.sigma_decay ** max(0, self._asked - self.warmup)

    def _act(self, observation: np.ndarray) -> float:
        if self._asked < self.warmup:
            return float(self.rng.uniform(0.0, 1.0))
        mean, _ = self.agent.predict(observation, deterministic=True)
        mu = float(np.clip(np.asarray(mean).reshape(-1)[0], 0.0, 1.0))
        sigma = self.current_sigma()
        if sigma <= 0:
            return mu
        low, high = (0.0 - mu) / sigma, (1.0 - mu) / sigma
        return float(truncnorm.rvs(low, high, loc=mu, scale=sigma, random_state=self.rng))

    def _play(self, actions: list[float] | None = None) -> tuple[_Episode, dict[str, float]]:
        """One episode: the agent's actions, or ``actions`` replayed (fractions of each group's max ratio)."""
        episode = _Episode()
        observation, _ = self.env.reset()
        done, info = False, {}
        while not done:
            action = self._act(observation) if actions is None else actions[len(episode.actions)]
            next_observation, _, done, _, info = self.env.step(np.array([action]))
            episode.observations.append(observation)
            episode.actions.append(info["action"])  # the clamped action actually taken
            episode.next_observations.append(next_observation)
            observation = next_observation
        return episode, info["ratios"]

    def _replay(self, ratios: Mapping[str, float]) -> tuple[_Episode, dict[str, float]]:
        """The episode whose actions give ``ratios`` (exact for a feasible policy: every ratio is legal)."""
        return self._play([ratios[n] / top if top > 0 else 0.0
                           for n, top in zip(self.env.names, self.env.maxima, strict=True)])

    def _ask(self, trial_id: int) -> Policy:
        if self._asked < len(self._starts):  # a starting point is evaluated as its baseline made it
            episode, ratios = self._replay(self._starts[self._asked])
        else:
            episode, ratios = self._play()
            fitted = self.context.fit(ratios, self.fit)
            if fitted != ratios:
                episode, ratios = self._replay(fitted)
        self._asked += 1
        self._episodes[trial_id] = episode
        return self.context.policy(ratios)

    # -- learning -----------------------------------------------------------------------------------
    def episode_reward(self, accuracy: float, flops: int) -> float:
        """AMC's reward: accuracy, or ``-error * log(FLOPs)`` in accuracy-guaranteed mode."""
        if self.reward == "accuracy":
            return accuracy
        return -(1.0 - accuracy) * math.log(max(flops, 1))

    def _tell(self, trial: Trial, score: Any) -> None:
        episode = self._episodes.pop(trial.id)
        accuracy = self.context.comparable_accuracy(score)
        if accuracy is None:
            return  # failed, or stopped by the scheduler before the fidelity the episodes are compared at
        reward = self.episode_reward(accuracy, score.flops)
        last = len(episode.actions) - 1
        for t, (obs, action, next_obs) in enumerate(
            zip(episode.observations, episode.actions, episode.next_observations, strict=True)
        ):
            scaled = self.agent.policy.scale_action(np.array([[action]], dtype=np.float32))
            self.agent.replay_buffer.add(
                obs[None], next_obs[None], scaled, np.array([reward]), np.array([t == last]), [{}]
            )
        self._told += 1
        if self._told >= self.warmup and self.agent.replay_buffer.size() >= self.batch_size:
            steps = self.updates_per_episode or len(episode.actions)
            with _seeded(int(self.rng.integers(2**31))):
                self.agent.train(gradient_steps=steps, batch_size=self.batch_size)

    # -- state --------------------------------------------------------------------------------------
    def _state_dict(self) -> dict[str, Any]:
        """A snapshot (deep copies): later training does not change a state already taken."""
        return copy.deepcopy({
            **super()._state_dict(),
            "policy": self.agent.policy.state_dict(),
            "actor_optimizer": self.agent.actor.optimizer.state_dict(),
            "critic_optimizer": self.agent.critic.optimizer.state_dict(),
            "replay_buffer": _buffer_arrays(self.agent.replay_buffer),
            "n_updates": self.agent._n_updates,
            "asked": self._asked,
            "told": self._told,
        })

    def _load_state_dict(self, state: Mapping[str, Any]) -> None:
        super()._load_state_dict(state)
        self.agent.policy.load_state_dict(state["policy"])
        self.agent.actor.optimizer.load_state_dict(state["actor_optimizer"])
        self.agent.critic.optimizer.load_state_dict(state["critic_optimizer"])
        _load_buffer(self.agent.replay_buffer, state["replay_buffer"])
        self.agent._n_updates = state["n_updates"]
        self._asked, self._told = state["asked"], state["told"]
        self._episodes.clear()


_BUFFER_ARRAYS = ("observations", "actions", "rewards", "next_observations", "dones", "timeouts")


def _buffer_arrays(buffer: Any) -> dict[str, Any]:
    """An SB3 replay buffer's contents as arrays (saved as tensors; no pickled object)."""
    return {**{name: getattr(buffer, name) for name in _BUFFER_ARRAYS}, "pos": int(buffer.pos),
            "full": bool(buffer.full), "baseline": buffer.baseline}


def _load_buffer(buffer: Any, state: Mapping[str, Any]) -> None:
    for name in _BUFFER_ARRAYS:
        getattr(buffer, name)[...] = state[name]
    buffer.pos, buffer.full = int(state["pos"]), bool(state["full"])
    buffer.baseline = None if state["baseline"] is None else float(state["baseline"])

