"""One OGBench episode at a time: env construction, seeded reset, stepping, success bookkeeping.

Shared by the vectorised evaluator and the ROS sim node, so both run exactly the same episodes for
the same (seed, task_id, episode).
"""
from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Iterator

import gymnasium
import numpy as np
import ogbench

from nfhiql_core.errors import ConfigError

EPISODE_SEEDS, VIDEO_SEEDS = 0, 1  # seed-derivation purposes: counted episodes vs video episodes


def canonical_env_name(env_name: str) -> str:
    """Append '-v0' when `env_name` has no version suffix."""
    return env_name if re.search(r"-v\d+$", env_name) else f"{env_name}-v0"


def make_env(env_name: str) -> gymnasium.Env:
    """Make an OGBench env from an env id or dataset name ('pointmaze-medium[-navigate][-v0]')."""
    name = canonical_env_name(env_name)
    try:
        if name in gymnasium.registry:
            return gymnasium.make(name)
        return ogbench.make_env_and_datasets(name, env_only=True)
    except gymnasium.error.Error:
        raise ConfigError(
            f"unknown OGBench environment {env_name!r} (expected e.g. 'pointmaze-medium-navigate-v0')"
        ) from None


def episode_seed(seed: int, task_id: int, episode: int, purpose: int = EPISODE_SEEDS) -> int:
    """Env reset seed derived from (seed, task_id, episode), independent of batching."""
    return int(np.random.SeedSequence(seed, spawn_key=(purpose, task_id, episode)).generate_state(1)[0])


@dataclass
class EpisodeRecord:
    """One evaluated episode."""

    task_id: int
    episode: int
    env_seed: int
    success: bool
    length: int


class Episode:
    """A running episode of evaluation task `task_id` on `env`, reset with `seed`.

    `observation` and `goal` hold the latest observation and the goal observation; `record` the
    outcome so far. `slot` identifies the env among several stepped in lockstep.
    """

    def __init__(self, env: gymnasium.Env, task_id: int, episode: int, seed: int, slot: int = 0):
        self.env = env
        self.slot = slot
        self.record = EpisodeRecord(task_id, episode, seed, False, 0)
        self._rng_state = np.random.RandomState(seed).get_state()
        self._rng_in_step = getattr(env.unwrapped, "_teleport_info", None) is not None  # teleport mazes
        with self._global_rng():
            self.observation, info = env.reset(seed=seed, options=dict(task_id=task_id))
        self.goal = info["goal"]

    @contextlib.contextmanager
    def _global_rng(self) -> Iterator[None]:
        """Swap in this episode's own state of numpy's global RNG; restore the caller's afterwards.

        OGBench draws goal jitter (at reset) and teleport exits (at step) from `np.random`, not
        from the seeded `env.np_random`; giving each episode its own stream keeps results
        independent of how episodes interleave and leaves the caller's global RNG untouched.
        """
        outer = np.random.get_state()
        np.random.set_state(self._rng_state)
        try:
            yield
        finally:
            self._rng_state = np.random.get_state()
            np.random.set_state(outer)

    def step(self, action: np.ndarray, max_steps: int | None = None) -> bool:
        """Step the env; True when the episode is over (success, time limit or `max_steps`)."""
        with self._global_rng() if self._rng_in_step else contextlib.nullcontext():
            self.observation, _, terminated, truncated, info = self.env.step(action)
        self.record.length += 1
        self.record.success = bool(info["success"])
        return terminated or truncated or (max_steps is not None and self.record.length >= max_steps)
