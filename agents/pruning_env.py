"""A gymnasium environment that walks the channel groups in network order (AMC's episode).

Each step sets one group's ratio. The action is clamped to AMC's legal range: assuming every later group
is pruned to its maximum, this group's ratio must be large enough for the budget to stay reachable, so
every finished episode's policy meets the budget without a penalty. The reward comes from an evaluation
that happens elsewhere (asynchronously), so ``step`` returns 0 and the agent assigns rewards on ``tell``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from search_spaces.budget import Budget, Cost
from search_spaces.cost import CostModel, bisect_feasible

STATIC_FEATURES = ("op_type", "in_channels", "out_channels", "kernel", "stride", "feature_size", "flops", "params")
# Budgets whose AMC state follows parameters (AMC's fine-grained mode) rather than FLOPs.
PARAMETER_METRICS = frozenset({"params", "nonzeros", "size"})
# index, static features, FLOPs already removed, FLOPs of the groups still to come, previous action
N_FEATURES = 1 + len(STATIC_FEATURES) + 3


class PruningEnv(gym.Env):
    """One episode = one policy: a ratio per group, chosen in network order.

    Observation (all in [0, 1]): the group's index and static features, min-max normalized over the
    space; the budget's cost removed so far and the share of the groups still to come (both relative to the
    unpruned model: FLOPs for FLOPs and latency budgets, as in AMC's FLOPs mode; parameters for
    parameter, non-zero and size budgets, as in AMC's fine-grained mode); the previous action.
    Action: in [0, 1], scaled to ``[0, max_ratio]`` of the group.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(self, cost_model: CostModel, budget: Budget) -> None:
        super().__init__()
        self.cost_model = cost_model
        self.budget = budget
        self.space = cost_model.space
        self.names = self.space.names
        self.maxima = np.array([g.max_ratio for g in self.space])
        static = np.array([[g.features[f] for f in STATIC_FEATURES] for g in self.space], dtype=np.float64)
        low, high = static.min(axis=0), static.max(axis=0)
        self._static = (static - low) / np.where(high > low, high - low, 1.0)
        self._by_params = budget.metric in PARAMETER_METRICS
        shares = np.array([g.params_share if self._by_params else g.flops_share for g in self.space])
        self._rest = np.clip(np.cumsum(shares[::-1])[::-1] - shares, 0.0, 1.0)  # share of groups after t
        self.observation_space = gym.spaces.Box(0.0, 1.0, shape=(N_FEATURES,), dtype=np.float32)
        self.action_space = gym.spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32)
        self._t = 0
        self._ratios: dict[str, float] = {}
        self._previous = 0.0

    def _observation(self) -> np.ndarray:
        t = self._t
        removed = 1.0 - self._metric(self.cost_model.cost(self._ratios)) / self._metric(self.cost_model.base)
        index = t / max(1, len(self.names) - 1)
        features = [index, *self._static[t], removed, self._rest[t], self._previous]
        return np.clip(np.asarray(features, dtype=np.float32), 0.0, 1.0)

    def _metric(self, cost: Cost) -> float:
        return self.budget.predicted(cost) if self._by_params else cost.flops

    def legal_min(self) -> float:
        """Smallest ratio for the current group that keeps the budget reachable (AMC's clamp)."""
        t = self._t
        later = {n: self.maxima[i] for i, n in enumerate(self.names) if i > t}
        name, top = self.names[t], float(self.maxima[t])
        ratios = bisect_feasible(
            lambda x: {**self._ratios, name: x * top, **later}, self.cost_model, self.budget, iterations=30
        )
        return ratios[name]

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._t, self._ratios, self._previous = 0, {}, 0.0
        return self._observation(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Set the current group's ratio from ``action`` (clamped to the legal range) and move on."""
        wanted = float(np.clip(np.asarray(action, dtype=np.float64).reshape(-1)[0], 0.0, 1.0))
        top = float(self.maxima[self._t])
        ratio = min(max(wanted * top, self.legal_min()), top)
        self._ratios[self.names[self._t]] = ratio
        self._previous = ratio / top if top > 0 else 0.0
        self._t += 1
        done = self._t == len(self.names)
        info: dict[str, Any] = {"ratio": ratio, "action": self._previous}
        if done:
            info["ratios"] = dict(self._ratios)
            self._t -= 1  # the terminal observation repeats the last group's features
            observation = self._observation()
            self._t += 1
            return observation, 0.0, True, False, info
        return self._observation(), 0.0, False, False, info
