"""The directional ant task the ant expert is trained on: OGBench's `online-ant-xy-v0`.

OGBench's `online-ant-v0` (`ogbench.online_locomotion.ant.AntEnv`: joint ranges restricted, 10 Hz
control, terminated when the torso leaves 0.2 ≤ z ≤ 1.0), episodes of 1000 steps, with a unit
direction z ~ N(0, I)/‖·‖ appended to the observation and redrawn every 100 steps. The reward is
the x-y displacement of the step along z (OGBench's GymXYWrapper). Here the direction comes from
an explicit generator and the whole state (simulation, direction, counters, RNGs) can be saved and
restored, so a resumed run continues exactly as an uninterrupted one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mujoco
import numpy as np
from ogbench.online_locomotion.ant import AntEnv

from nfhiql_core.data.ant_expert import ACTION_DIM, OBS_DIM

ENV_NAME = "online-ant-xy-v0"
_SIM_STATE = mujoco.mjtState.mjSTATE_INTEGRATION  # everything mj_step reads: bitwise restarts


@dataclass(frozen=True)
class AntXYConfig:
    """The directional ant task (defaults: OGBench's online-ant-xy-v0)."""

    max_episode_steps: int = 1000  # truncation (online-ant-v0's registered time limit)
    resample_interval: int = 100  # steps between direction draws (GymXYWrapper's resample_interval)

    def __post_init__(self) -> None:
        if self.max_episode_steps < 1 or self.resample_interval < 1:
            raise ValueError("max_episode_steps and resample_interval must be >= 1")


@dataclass(frozen=True)
class Step:
    """One transition's outcome."""

    observation: np.ndarray  # the next observation (with the direction the next step is rewarded on)
    reward: float  # displacement along the direction the action was taken for
    terminated: bool  # the ant fell over or flipped (no bootstrap)
    truncated: bool  # time limit


class DirectionalAnt:
    """Ant that is rewarded for walking along a direction given in its observation."""

    obs_dim, action_dim = OBS_DIM, ACTION_DIM

    def __init__(self, config: AntXYConfig, seed: int):
        self.config = config
        self.ant = AntEnv()
        self.dt = float(self.ant.dt)  # seconds per step
        ant_seed, direction_seed = np.random.SeedSequence(seed).generate_state(2)
        self.ant.reset(seed=int(ant_seed))  # seeds the ant's reset noise generator once
        self.rng = np.random.default_rng(direction_seed)
        self.direction = np.zeros(2)
        self.steps = 0
        self.episode_return = 0.0

    def reset(self) -> np.ndarray:
        """Start an episode (reset noise as OGBench's ant; a new direction)."""
        self.ant.reset()
        self.direction = self._draw_direction()
        self.steps, self.episode_return = 0, 0.0
        return self.observation()

    def observation(self) -> np.ndarray:
        """The ant's qpos without x-y, its qvel, then the direction."""
        return np.concatenate([self.ant._get_obs(), self.direction])

    def step(self, action: np.ndarray) -> Step:
        """Apply `action` for one control step (0.1 s)."""
        before = self.ant.data.qpos[:2].copy()
        _, _, terminated, _, _ = self.ant.step(np.asarray(action, np.float64))
        reward = float((self.ant.data.qpos[:2] - before) @ self.direction)
        self.steps += 1
        self.episode_return += reward
        if self.steps % self.config.resample_interval == 0:
            self.direction = self._draw_direction()
        truncated = self.steps >= self.config.max_episode_steps
        return Step(self.observation(), reward, bool(terminated), truncated)

    def velocity(self) -> float:
        """The episode's mean velocity along its directions so far (m/s)."""
        return self.episode_return / (max(self.steps, 1) * self.dt)

    def _draw_direction(self) -> np.ndarray:
        z = self.rng.standard_normal(2)
        return z / np.linalg.norm(z)

    def get_state(self) -> dict[str, Any]:
        """Everything that determines the rest of the run (numpy arrays and plain values)."""
        sim = np.empty(mujoco.mj_stateSize(self.ant.model, _SIM_STATE))
        mujoco.mj_getState(self.ant.model, self.ant.data, sim, _SIM_STATE)
        return {"sim": sim, "direction": self.direction.copy(), "steps": self.steps,
                "episode_return": self.episode_return, "rng": self.rng.bit_generator.state,
                "ant_rng": self.ant.np_random.bit_generator.state}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore a `get_state` snapshot."""
        mujoco.mj_setState(self.ant.model, self.ant.data, np.asarray(state["sim"], np.float64), _SIM_STATE)
        mujoco.mj_forward(self.ant.model, self.ant.data)
        self.direction = np.asarray(state["direction"], np.float64).copy()
        self.steps, self.episode_return = int(state["steps"]), float(state["episode_return"])
        self.rng.bit_generator.state = state["rng"]
        self.ant.np_random.bit_generator.state = state["ant_rng"]
