"""Tests for nfhiql_core.data.datagen: seeded OGBench-format dataset generation."""
from __future__ import annotations

import gymnasium
import numpy as np
import ogbench
import pytest

from nfhiql_core.data.datagen import SUPPORTED_ENVS, _cells_at_distance, _scene_cube_stayed_visible, generate_dataset
from nfhiql_core.errors import ConfigError, OutputExistsError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

KEYS = ("observations", "actions", "terminals", "qpos", "qvel")


def _generate(tmp_path, name="pointmaze-medium-navigate", episodes=3, steps=50, seed=0, **kwargs):
    path = tmp_path / f"{name}-{episodes}-{steps}-{seed}-{kwargs.get('workers', 1)}.npz"
    generate_dataset(name, episodes, seed, path, max_episode_steps=steps, progress=False, **kwargs)
    with np.load(path) as data:
        return path, {key: data[key] for key in data.files}


def test_same_seed_is_reproducible_and_independent_of_workers(tmp_path):
    _, first = _generate(tmp_path, seed=7)
    _, again = _generate(tmp_path / "again", seed=7)
    _, pooled = _generate(tmp_path, seed=7, workers=2)
    _, other = _generate(tmp_path, seed=8)
    assert set(first) == set(KEYS)
    for key in KEYS:
        assert first[key].tobytes() == again[key].tobytes(), key
        assert first[key].tobytes() == pooled[key].tobytes(), key
    assert not np.array_equal(first["observations"], other["observations"])
    assert not np.array_equal(first["actions"], other["actions"])


def _check_layout(path, data, episodes, steps, ob_dim, act_dim):
    n = episodes * steps
    assert data["observations"].shape == (n, ob_dim) and data["observations"].dtype == np.float32
    assert data["actions"].shape == (n, act_dim) and data["actions"].dtype == np.float32
    assert data["terminals"].dtype == np.float32
    np.testing.assert_array_equal(np.flatnonzero(data["terminals"]), np.arange(steps - 1, n, steps))
    assert np.all(np.abs(data["actions"]) <= 1.0)
    assert all(np.isfinite(data[key]).all() for key in KEYS)

    plain = ogbench.load_dataset(str(path))
    assert plain["observations"].shape == (n - episodes, ob_dim)
    assert plain["next_observations"].shape == (n - episodes, ob_dim)
    assert plain["actions"].shape == (n - episodes, act_dim)
    compact = ogbench.load_dataset(str(path), compact_dataset=True)
    assert compact["observations"].shape == (n, ob_dim)
    assert compact["valids"].sum() == n - episodes


def test_pointmaze_output_matches_ogbench_layout(tmp_path):
    path, data = _generate(tmp_path, "pointmaze-large-stitch-v0", episodes=3, steps=40)
    _check_layout(path, data, episodes=3, steps=40, ob_dim=2, act_dim=2)
    np.testing.assert_array_equal(data["qpos"], data["observations"])


def test_cube_output_matches_ogbench_layout(tmp_path):
    path, data = _generate(tmp_path, "cube-single-play", episodes=1, steps=30)
    _check_layout(path, data, episodes=1, steps=30, ob_dim=28, act_dim=5)


@pytest.mark.parametrize("name, ob_dim, qpos_dim, buttons", [("scene-play", 40, 25, 2), ("puzzle-3x3-play", 55, 23, 9)])
def test_scene_and_puzzle_match_ogbench_layout_with_button_states(tmp_path, name, ob_dim, qpos_dim, buttons):
    path, data = _generate(tmp_path, name, episodes=2, steps=150, seed=3)
    _check_layout(path, data, episodes=2, steps=150, ob_dim=ob_dim, act_dim=5)
    assert data["qpos"].shape == (300, qpos_dim)
    assert data["button_states"].shape == (300, buttons) and data["button_states"].dtype == np.int64
    assert set(np.unique(data["button_states"])) <= {0, 1}
    with_info = ogbench.load_dataset(str(path), add_info=True)
    assert with_info["button_states"].shape == (298, buttons)
    _, again = _generate(tmp_path / "again", name, episodes=2, steps=150, seed=3, workers=2)
    assert all(data[key].tobytes() == again[key].tobytes() for key in data)
    env = gymnasium.make(f"{name.removesuffix('-play')}-v0").unwrapped
    assert env.observation_space.shape == (ob_dim,)


def test_scene_health_test_is_ogbenchs():
    qpos = np.zeros((4, 25))
    qpos[:, 14:17] = [0.4, 0.0, 0.02]  # on the table
    assert _scene_cube_stayed_visible(qpos)
    for y, z, visible in [(0.29, 0.02, False), (-0.3, 0.02, False), (-0.3, 0.07, True), (-0.35, 0.09, False)]:
        moved = qpos.copy()
        moved[2, 15:17] = y, z
        assert _scene_cube_stayed_visible(moved) is visible, (y, z)


def test_refuses_to_overwrite_without_force(tmp_path):
    path = tmp_path / "existing.npz"
    path.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError):
        generate_dataset("pointmaze-medium-navigate", 1, 0, path, max_episode_steps=5, progress=False)
    assert path.read_bytes() == b"keep me"
    generate_dataset("pointmaze-medium-navigate", 1, 0, path, max_episode_steps=5, progress=False, force=True)
    assert np.load(path)["observations"].shape == (5, 2)


@pytest.mark.parametrize(
    "name, kwargs",
    [("humanoidmaze-large-navigate", {}), ("pointmaze-medium", {}), ("cube-single-play", {"dataset_type": "navigate"})],
)
def test_unsupported_configs_raise_config_error(tmp_path, name, kwargs):
    with pytest.raises(ConfigError):
        generate_dataset(name, 1, 0, tmp_path / "x.npz", progress=False, **kwargs)
    assert not (tmp_path / "x.npz").exists()
    assert "pointmaze-medium-navigate" in SUPPORTED_ENVS and "cube-single-play" in SUPPORTED_ENVS


def test_noiseless_stitch_oracle_reaches_goal_four_cells_away(tmp_path):
    episodes, steps = 6, 201
    _, data = _generate(tmp_path, "pointmaze-medium-stitch", episodes=episodes, steps=steps, noise=0.0)
    maze = gymnasium.make("pointmaze-medium-v0").unwrapped
    en_route = data["actions"].reshape(episodes, steps, 2)[:, :40]  # 4 cells take > 40 steps of 0.2
    np.testing.assert_allclose(np.linalg.norm(en_route, axis=-1), 1.0, atol=1e-4)
    for obs in data["observations"].reshape(episodes, steps, 2):
        start, end = maze.xy_to_ij(obs[0]), maze.xy_to_ij(obs[-1])
        assert end in _cells_at_distance(maze.maze_map, start, 4), (start, end)
        assert np.linalg.norm(obs[-1] - maze.ij_to_xy(end)) < 0.5  # settled on the goal cell's centre
