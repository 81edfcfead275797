"""One OGBench episode at a time: env construction, seeded reset, stepping, success bookkeeping.

Shared by the vectorised evaluator and the ROS sim node, so both run exactly the same episodes for
the same (seed, task_id, episode).
"""
from __future__ import annotations

import contextlib
import re
import warnings
from dataclasses import dataclass
from typing import Iterator

import gymnasium
import numpy as np
import ogbench
from gymnasium.utils import seeding

import nfhiql_core.headless_gl  # noqa: F401, I001  (before MuJoCo: picks its OpenGL backend)
from nfhiql_core.errors import ConfigError

EPISODE_SEEDS, VIDEO_SEEDS = 0, 1  # seed-derivation purposes: counted episodes vs video episodes
_SPACE_SEEDS = 2  # spawn key of an episode's stream for gymnasium spaces sampled without a seed
_gym_np_random = seeding.np_random


def canonical_env_name(env_name: str) -> str:
    """Append '-v0' when `env_name` has no version suffix."""
    return env_name if re.search(r"-v\d+$", env_name) else f"{env_name}-v0"


@contextlib.contextmanager
def quiet_gymnasium() -> Iterator[None]:
    """Silence gymnasium's warning that OGBench's float64 Box bounds are cast to float32.

    OGBench builds a new Box on every `action_space` access, so the warning would come on every
    env made and every evaluation run; it says nothing the user can act on.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*precision lowered by casting to float32", category=UserWarning)
        yield


def make_env(env_name: str) -> gymnasium.Env:
    """Make an OGBench env from an env id or dataset name ('pointmaze-medium[-navigate][-v0]')."""
    name = canonical_env_name(env_name)
    try:
        with quiet_gymnasium():
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
        self._space_seeds = np.random.SeedSequence(seed, spawn_key=(_SPACE_SEEDS,))
        self._rng_in_step = getattr(env.unwrapped, "_teleport_info", None) is not None  # teleport mazes
        with self._episode_rngs():
            self.observation, info = env.reset(seed=seed, options=dict(task_id=task_id))
        self.goal = info["goal"]

    @contextlib.contextmanager
    def _episode_rngs(self) -> Iterator[None]:
        """Swap in this episode's own streams for the RNGs OGBench uses besides `env.np_random`.

        OGBench draws goal jitter (at reset) and teleport exits (at step) from `np.random`, and the
        manipulation envs settle the goal scene with `action_space.sample()` on a fresh gymnasium
        space, which seeds itself from OS entropy (so the goal differed from process to process).
        Inside this context numpy's global RNG holds this episode's state and an unseeded space
        draws its seed from this episode's sequence; both are restored afterwards. Results are then
        a function of (seed, task_id, episode) alone, independent of how episodes interleave.
        """
        outer = np.random.get_state()
        np.random.set_state(self._rng_state)
        seeding.np_random = self._space_np_random
        try:
            yield
        finally:
            seeding.np_random = _gym_np_random
            self._rng_state = np.random.get_state()
            np.random.set_state(outer)

    def _space_np_random(self, seed: int | None = None) -> tuple[np.random.Generator, int]:
        """gymnasium's `seeding.np_random`, seeded from this episode's sequence when `seed` is None."""
        if seed is None:
            seed = int(self._space_seeds.spawn(1)[0].generate_state(1)[0])
        return _gym_np_random(seed)

    def step(self, action: np.ndarray, max_steps: int | None = None) -> bool:
        """Step the env; True when the episode is over (success, time limit or `max_steps`)."""
        with self._episode_rngs() if self._rng_in_step else contextlib.nullcontext():
            self.observation, _, terminated, truncated, info = self.env.step(action)
        self.record.length += 1
        self.record.success = bool(info["success"])
        return terminated or truncated or (max_steps is not None and self.record.length >= max_steps)
