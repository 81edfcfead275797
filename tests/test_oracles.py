"""The observation-driven oracles the ROS teleop uses: the cube oracle's state, rebuilt from the
observation and goal, is the env's own, and it solves cube-single tasks from observations alone."""
import numpy as np
import pytest

from nfhiql_core.data.oracles import CubeOracle, MazeOracle, make_oracle
from nfhiql_core.errors import ConfigError
from nfhiql_core.evaluation.episodes import make_env

STATE_KEYS = ("proprio/effector_pos", "proprio/effector_yaw", "proprio/gripper_opening", "privileged/block_0_pos",
              "privileged/block_0_yaw")


@pytest.fixture(scope="module")
def cube_env():
    env = make_env("cube-single-play-v0")
    yield env
    env.close()


def test_cube_oracle_rebuilds_the_state_and_solves_tasks_from_observations(cube_env) -> None:
    env = cube_env
    oracle = make_oracle(env, "cube-single-play-v0", None, seed=0)
    assert isinstance(oracle, CubeOracle) and oracle.oracle._noise == 0.1  # OGBench's default
    for task in (1, 4):
        ob, info = env.reset(seed=task, options=dict(task_id=task))
        goal = info["goal"]
        for step in range(200):
            state = oracle.state(ob, goal, step)
            for key in STATE_KEYS:
                np.testing.assert_allclose(state[key], info[key], atol=1e-9, err_msg=key)
            ob, _, _, _, info = env.step(oracle.action(ob, goal, step))
            if info["success"]:
                break
        assert info["success"], f"task {task} not solved in 200 steps"


def test_maze_oracle_and_unsupported_envs(cube_env) -> None:
    env = make_env("pointmaze-medium-navigate-v0")
    oracle = make_oracle(env, "pointmaze-medium-navigate-v0", 0.0, seed=0)
    assert isinstance(oracle, MazeOracle)
    ob, info = env.reset(seed=0, options=dict(task_id=1))
    action = oracle.action(ob, info["goal"], 0)
    assert np.linalg.norm(action) == pytest.approx(1.0, abs=1e-5)  # noise 0: a unit direction
    with pytest.raises(ConfigError, match="point mazes and cube-single only"):
        make_oracle(cube_env, "scene-play-v0", None, seed=0)  # neither a maze nor cube-single
