"""OGBench's scripted oracles, driven from what a teleoperator sees: the observation and the goal.

`datagen` runs them inside the env; the ROS `teleop` node runs them from `observation`/`goal`
messages, with its own copy of the env only for what the oracles read from it (the maze map; the
arm's sampling bounds, control timestep and action scaling). Noise levels are OGBench's.
"""
from __future__ import annotations

import gymnasium
import numpy as np
import nfhiql_core.headless_gl  # noqa: F401, I001  (before MuJoCo: picks its OpenGL backend)
from ogbench.manipspace.oracles.plan.cube_plan import CubePlanOracle

from nfhiql_core.data.ant_expert import AntExpert, expert_observation
from nfhiql_core.errors import ConfigError

DEFAULT_NOISE = {"maze": 0.5, "ant": 0.2, "cube": 0.1, "scene": 0.1, "puzzle": 0.1}  # OGBench's data-generation noise per env family
PLAN_NOISE_SMOOTHING = 0.5  # manipulation plans: temporal smoothing of the plan noise
# ogbench's CubeEnv.compute_observation: positions are (xyz - center) * 10, gripper opening * 3.
_XYZ_CENTER, _XYZ_SCALE, _GRIPPER_SCALE = np.array([0.425, 0.0, 0.0]), 10.0, 3.0
_CUBE_SINGLE_DIM = 28  # proprio (19) + one cube (position 3, quaternion 4, yaw cos/sin 2)


def subgoal_direction(maze, xy: np.ndarray, goal_xy: np.ndarray) -> np.ndarray:
    """Unit x-y direction from `xy` to the next BFS cell towards `goal_xy` (OGBench's oracle subgoal).
    `maze` is the unwrapped maze env (only its map is used)."""
    subgoal_xy, _ = maze.get_oracle_subgoal(xy, goal_xy)
    return (subgoal_xy - xy) / (np.linalg.norm(subgoal_xy - xy) + 1e-6)


def maze_oracle_action(maze, xy: np.ndarray, goal_xy: np.ndarray, noise: float,
                       rng: np.random.Generator) -> np.ndarray:
    """OGBench's point-maze oracle: the subgoal direction plus N(0, noise^2), clipped to [-1, 1]."""
    return np.clip(subgoal_direction(maze, xy, goal_xy) + rng.normal(0.0, noise, 2), -1.0, 1.0)


def ant_oracle_action(maze, expert: AntExpert, noise: float, rng: np.random.Generator) -> np.ndarray:
    """OGBench's ant-maze oracle: the directional expert walking towards the subgoal, fed the ant's
    state without its x-y, plus N(0, noise^2), clipped to [-1, 1]. `maze` is the unwrapped env."""
    direction = subgoal_direction(maze, maze.get_xy(), maze.cur_goal_xy)
    action = expert.act(expert_observation(maze.get_ob(ob_type="states"), direction))
    return np.clip(action + rng.normal(0.0, noise, action.shape), -1.0, 1.0)


class MazeOracle:
    """Point mazes: the observation's first two values are the agent's x, y (the goal's too)."""

    family = "maze"

    def __init__(self, env: gymnasium.Env, noise: float, seed: int):
        self.maze, self.noise = env.unwrapped, noise
        self.rng = np.random.default_rng(seed)

    def action(self, observation: np.ndarray, goal: np.ndarray, step: int) -> np.ndarray:
        """The command for `observation`, the `step`-th of an episode towards `goal`."""
        return maze_oracle_action(self.maze, observation[:2], goal[:2], self.noise, self.rng)


class CubeOracle:
    """cube-single: OGBench's CubePlanOracle (plan noise from numpy's global RNG, as in OGBench),
    fed the state it needs reconstructed from the observation, the target from the goal
    observation and the time from the step count. A new plan starts at each episode's first
    step and whenever the previous plan has run out (e.g. a noisy place missed the target)."""

    family = "cube"

    def __init__(self, env: gymnasium.Env, noise: float, seed: int):
        if env.observation_space.shape != (_CUBE_SINGLE_DIM,):
            raise ConfigError(f"the cube oracle drives cube-single (a {_CUBE_SINGLE_DIM}-D observation), "
                              f"not a {env.observation_space.shape} one")
        self.oracle = CubePlanOracle(env=env, noise=noise, noise_smoothing=PLAN_NOISE_SMOOTHING)
        self.dt = float(env.unwrapped._control_timestep)
        np.random.seed(seed)

    def state(self, observation: np.ndarray, goal: np.ndarray, step: int) -> dict[str, np.ndarray]:
        """The `info` entries the plan oracle reads, from the observation and goal."""
        def position(ob: np.ndarray) -> np.ndarray:
            return ob[19:22] / _XYZ_SCALE + _XYZ_CENTER

        def yaw(cos: float, sin: float) -> np.ndarray:
            return np.array([np.arctan2(sin, cos)])

        return {
            "proprio/effector_pos": observation[12:15] / _XYZ_SCALE + _XYZ_CENTER,
            "proprio/effector_yaw": yaw(observation[15], observation[16]),
            "proprio/gripper_opening": np.array([observation[17] / _GRIPPER_SCALE]),
            "privileged/block_0_pos": position(observation),
            "privileged/block_0_yaw": yaw(observation[26], observation[27]),
            "privileged/target_block": 0,
            "privileged/target_block_pos": position(goal),
            "privileged/target_block_yaw": yaw(goal[26], goal[27]),
            "time": np.array([step * self.dt]),
        }

    def action(self, observation: np.ndarray, goal: np.ndarray, step: int) -> np.ndarray:
        """The command for `observation`, the `step`-th of an episode towards `goal`."""
        info = self.state(observation, goal, step)
        if step == 0 or self.oracle.done:
            self.oracle.reset(observation, info)
        return np.clip(np.asarray(self.oracle.select_action(observation, info)), -1.0, 1.0)


def make_oracle(env: gymnasium.Env, env_name: str, noise: float | None, seed: int) -> MazeOracle | CubeOracle:
    """The oracle for `env` (point mazes, cube-single); `noise` None = OGBench's default."""
    if hasattr(env.unwrapped, "get_oracle_subgoal"):
        cls = MazeOracle
    elif env_name.startswith("cube-single"):
        cls = CubeOracle
    else:
        raise ConfigError(f"no observation-driven oracle for {env_name} (point mazes and cube-single only)")
    return cls(env, DEFAULT_NOISE[cls.family] if noise is None else noise, seed)
