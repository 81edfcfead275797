"""HIQL's hierarchical goal sampler (OGBench `GCDataset` / `HGCDataset` semantics), vectorised."""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from nfhiql_core.data.dataset import Dataset
from nfhiql_core.errors import ConfigError


@dataclass(frozen=True)
class GoalSamplerConfig:
    """Goal-sampling settings (OGBench HIQL defaults).

    As in OGBench's HGCDataset the high-level actor never uses the current state as its goal, so
    `actor_p_curgoal` must be 0.
    """

    discount: float = 0.99
    subgoal_steps: int = 25
    value_p_curgoal: float = 0.2
    value_p_trajgoal: float = 0.5
    value_p_randomgoal: float = 0.3
    value_geom_sample: bool = True
    actor_p_curgoal: float = 0.0
    actor_p_trajgoal: float = 1.0
    actor_p_randomgoal: float = 0.0
    actor_geom_sample: bool = False
    gc_negative: bool = True

    def validate(self) -> None:
        """Raise ConfigError on an invalid setting."""
        if not 0.0 <= self.discount < 1.0:
            raise ConfigError(f"goal sampler: discount must be in [0, 1), got {self.discount}")
        k = self.subgoal_steps
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise ConfigError(f"goal sampler: subgoal_steps must be an integer >= 1, got {k!r}")
        for prefix in ("value", "actor"):
            _check_probabilities(self, prefix)
        if self.actor_p_curgoal != 0.0:
            raise ConfigError(
                f"goal sampler: actor_p_curgoal must be 0 (the high-level actor has no current-state goals), "
                f"got {self.actor_p_curgoal}"
            )


def _check_probabilities(config: GoalSamplerConfig, prefix: str) -> None:
    names = [f"{prefix}_p_curgoal", f"{prefix}_p_trajgoal", f"{prefix}_p_randomgoal"]
    values = [getattr(config, name) for name in names]
    for name, value in zip(names, values):
        if not (isinstance(value, numbers.Real) and math.isfinite(value) and value >= 0.0):
            raise ConfigError(f"goal sampler: {name} must be a finite number >= 0, got {value!r}")
    if not math.isclose(sum(values), 1.0, abs_tol=1e-6):
        raise ConfigError(f"goal sampler: {' + '.join(names)} must sum to 1, got {sum(values)}")


class HierarchicalGoalSampler:
    """Samples HIQL training batches: value goals, low-level subgoals, high-level goals and targets."""

    def __init__(self, dataset: Dataset, config: GoalSamplerConfig) -> None:
        config.validate()
        self.dataset = dataset
        self.config = config

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Draw a batch of `batch_size` transitions with their goals; deterministic given `rng`."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        cfg = self.config
        idxs = self._random_valid_idxs(batch_size, rng)
        ends = self.dataset.trajectory_ends(idxs)
        value_goal_idxs = self._value_goal_idxs(idxs, ends, rng)
        low_goal_idxs = np.minimum(idxs + cfg.subgoal_steps, ends)
        high_goal_idxs, high_target_idxs = self._high_actor_idxs(idxs, ends, rng)

        successes = (idxs == value_goal_idxs).astype(np.float32)
        obs_idxs = (idxs, idxs + 1, value_goal_idxs, low_goal_idxs, high_goal_idxs, high_target_idxs)
        obs, next_obs, value_goals, low_goals, high_goals, high_targets = np.split(
            self.dataset.rows("observations", np.concatenate(obs_idxs)), len(obs_idxs))  # one read of all rows
        return {
            "observations": obs,
            "next_observations": next_obs,
            "actions": self.dataset.rows("actions", idxs),
            "value_goals": value_goals,
            "rewards": successes - (1.0 if cfg.gc_negative else 0.0),
            "masks": 1.0 - successes,
            "low_actor_goals": low_goals,
            "high_actor_goals": high_goals,
            "high_actor_targets": high_targets,
            "idxs": idxs,
            "value_goal_idxs": value_goal_idxs,
            "low_actor_goal_idxs": low_goal_idxs,
            "high_actor_goal_idxs": high_goal_idxs,
            "high_actor_target_idxs": high_target_idxs,
        }

    def _random_valid_idxs(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return self.dataset.nth_valid(rng.integers(self.dataset.num_valid, size=n))

    def _trajectory_goal_idxs(
        self, idxs: np.ndarray, ends: np.ndarray, geometric: bool, rng: np.random.Generator
    ) -> np.ndarray:
        """Goals later in the same trajectory, capped at its last valid index."""
        if geometric:
            offsets = rng.geometric(p=1.0 - self.config.discount, size=len(idxs))  # support >= 1
            return np.minimum(idxs + offsets, ends)
        u = rng.random(len(idxs))
        return np.round(np.minimum(idxs + 1, ends) * u + ends * (1.0 - u)).astype(np.int64)

    def _value_goal_idxs(self, idxs: np.ndarray, ends: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Current / trajectory / random goals mixed as in OGBench's GCDataset.sample_goals."""
        cfg = self.config
        n = len(idxs)
        random_idxs = self._random_valid_idxs(n, rng)
        traj_idxs = self._trajectory_goal_idxs(idxs, ends, cfg.value_geom_sample, rng)
        p_traj = cfg.value_p_trajgoal / (1.0 - cfg.value_p_curgoal) if cfg.value_p_curgoal < 1.0 else 1.0
        goal_idxs = np.where(rng.random(n) < p_traj, traj_idxs, random_idxs)
        return np.where(rng.random(n) < cfg.value_p_curgoal, idxs, goal_idxs)

    def _high_actor_idxs(
        self, idxs: np.ndarray, ends: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """High-level goals and subgoal targets as in OGBench's HGCDataset."""
        cfg = self.config
        n = len(idxs)
        traj_goals = self._trajectory_goal_idxs(idxs, ends, cfg.actor_geom_sample, rng)
        random_goals = self._random_valid_idxs(n, rng)
        pick_random = rng.random(n) < cfg.actor_p_randomgoal
        goal_idxs = np.where(pick_random, random_goals, traj_goals)
        target_idxs = np.minimum(idxs + cfg.subgoal_steps, np.where(pick_random, ends, traj_goals))
        return goal_idxs, target_idxs
