"""Tests for nfhiql_core.evaluation.protocol on real OGBench environments with hand-written policies."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from nfhiql_core.errors import ConfigError
from nfhiql_core.evaluation.protocol import EvalResult, PolicyError, evaluate, make_env, write_result

MAZE = "pointmaze-medium-navigate-v0"


def go_to_goal(observations: np.ndarray, goals: np.ndarray) -> np.ndarray:
    """Head straight for the goal xy: solves open tasks, gets stuck behind walls on others."""
    return np.clip(goals[:, :2] - observations[:, :2], -1.0, 1.0)


def zero_policy(observations: np.ndarray, goals: np.ndarray) -> np.ndarray:
    return np.zeros((len(observations), 2))


def quick(policy, **kw) -> EvalResult:
    kw = {"episodes_per_task": 2, "max_steps": 200, "progress": False, **kw}
    return evaluate(policy, MAZE, **kw)


def test_make_env_accepts_name_variants_and_rejects_unknown() -> None:
    for name in ("pointmaze-medium-navigate-v0", "pointmaze-medium-navigate", "pointmaze-medium"):
        assert make_env(name).spec.id == "pointmaze-medium-v0"
    with pytest.raises(ConfigError) as e:
        make_env("nosuchmaze-huge-navigate")
    assert "\n" not in str(e.value)


def test_go_to_goal_summary_and_json(tmp_path) -> None:
    r = quick(go_to_goal)
    assert sorted(r.per_task_success) == [1, 2, 3, 4, 5]
    assert r.per_task_success[1] == 1.0 and r.per_task_success[3] == 0.0
    assert r.success == pytest.approx(np.mean(list(r.per_task_success.values())))
    p = np.mean([e.success for e in r.episodes])
    assert r.ci95 == pytest.approx(1.96 * math.sqrt(p * (1 - p) / 10))
    assert [(e.task_id, e.episode) for e in r.episodes] == [(t, i) for t in range(1, 6) for i in range(2)]
    assert all(e.length <= 200 for e in r.episodes)
    write_result(r, tmp_path / "eval.json")
    d = json.loads((tmp_path / "eval.json").read_text())
    assert d["per_task_success"]["1"] == 1.0 and len(d["episodes"]) == 10 and d["env_name"] == MAZE


def test_deterministic_and_independent_of_num_envs() -> None:
    np.random.seed(1)  # OGBench jitters goals with np.random: results must not depend on its state
    a = quick(go_to_goal, episodes_per_task=3, seed=7)
    before = np.random.get_state()[1].copy()
    b = quick(go_to_goal, episodes_per_task=3, seed=7)
    assert np.array_equal(before, np.random.get_state()[1])  # caller's global RNG left untouched
    c = quick(go_to_goal, episodes_per_task=3, seed=7, num_envs=1)
    assert a.episodes == b.episodes == c.episodes
    assert len({e.env_seed for e in a.episodes}) == 15
    other = quick(go_to_goal, episodes_per_task=3, seed=8)
    assert {e.env_seed for e in other.episodes}.isdisjoint({e.env_seed for e in a.episodes})


def test_teleport_maze_independent_of_num_envs() -> None:
    """Task 4 starts above a teleport; the exit (drawn from np.random at step time) decides success."""

    def via_teleport(observations: np.ndarray, goals: np.ndarray) -> np.ndarray:
        above = (observations[:, :1] < 2) & (observations[:, 1:2] > 15)
        return np.clip(np.where(above, [0.0, 15.0], goals[:, :2]) - observations[:, :2], -1, 1)

    kw = dict(episodes_per_task=6, task_ids=[4], max_steps=300, progress=False)
    runs = [evaluate(via_teleport, "pointmaze-teleport-navigate", num_envs=n, **kw) for n in (6, 1, 2)]
    assert runs[0].episodes == runs[1].episodes == runs[2].episodes
    assert 0 < runs[0].success < 1


def test_zero_policy_fails_and_runs_to_time_limit() -> None:
    r = evaluate(zero_policy, MAZE, episodes_per_task=1, progress=False)
    assert r.success == 0.0 and r.ci95 == 0.0
    assert all(not e.success and e.length == 1000 for e in r.episodes)


def test_random_policy_runs() -> None:
    rng = np.random.default_rng(0)
    r = quick(lambda o, g: rng.uniform(-1, 1, size=(len(o), 2)), num_envs=4)
    assert len(r.episodes) == 10 and 0.0 <= r.success <= 1.0


def test_actions_are_clipped() -> None:
    big = quick(lambda o, g: np.full((len(o), 2), 10.0), task_ids=[1])
    unit = quick(lambda o, g: np.ones((len(o), 2)), task_ids=[1])
    assert big.episodes == unit.episodes


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_action_raises(bad: float) -> None:
    with pytest.raises(PolicyError, match="task 2, episode 0"):
        quick(lambda o, g: np.full((len(o), 2), bad), task_ids=[2])


def test_wrong_action_shape_and_bad_task_ids_raise() -> None:
    with pytest.raises(PolicyError, match="shape"):
        quick(lambda o, g: np.zeros((len(o), 3)), task_ids=[1])
    with pytest.raises(ConfigError):
        quick(zero_policy, task_ids=[6])


class ReplanningPolicy:
    """Stateful: picks a new random heading every 4 steps per env; counts steps since reset."""

    def __init__(self) -> None:
        self.steps: dict[int, int] = {}
        self.resets: list[int] = []
        self.rng = np.random.default_rng(0)

    def reset(self, env_indices: np.ndarray) -> None:
        self.resets += env_indices.tolist()
        self.steps.update({int(i): 0 for i in env_indices})

    def __call__(self, observations: np.ndarray, goals: np.ndarray, env_indices: np.ndarray) -> np.ndarray:
        assert len(env_indices) == len(observations) and list(env_indices) == sorted(env_indices)
        for i in env_indices:
            self.steps[int(i)] += 1
        return self.rng.uniform(-1, 1, size=(len(observations), 2))


def test_stateful_policy_reset_at_episode_starts() -> None:
    policy = ReplanningPolicy()
    r = evaluate(policy, MAZE, episodes_per_task=3, task_ids=[1, 2], num_envs=2, max_steps=5, progress=False)
    assert len(r.episodes) == 6 and all(e.length == 5 for e in r.episodes)
    assert sorted(policy.resets) == [0, 0, 0, 1, 1, 1]
    assert all(0 < s <= 5 for s in policy.steps.values())


def zero_policy_cube(observations: np.ndarray, goals: np.ndarray) -> np.ndarray:
    return np.zeros((len(observations), 5))


def test_cube_single_short() -> None:
    r = evaluate(zero_policy_cube, "cube-single-play", episodes_per_task=1, task_ids=[1, 2], max_steps=10,
                 progress=False)
    assert r.per_task_success == {1: 0.0, 2: 0.0}
    assert [e.length for e in r.episodes] == [10, 10]


def test_video_written(tmp_path) -> None:
    path = tmp_path / "video.gif"
    r = quick(go_to_goal, episodes_per_task=1, task_ids=[1], max_steps=12, video_path=path)
    assert path.stat().st_size > 0 and r.video_path == str(path)
    assert len(r.episodes) == 1  # the video episode is not counted


def test_unwritable_video_path_fails_before_any_episode(tmp_path) -> None:
    calls = []

    def counting(obs, goals):
        calls.append(1)
        return go_to_goal(obs, goals)

    with pytest.raises(ConfigError, match=r"video\.avi: video path must end in \.gif or \.mp4"):
        quick(counting, episodes_per_task=1, task_ids=[1], max_steps=5, video_path=tmp_path / "video.avi")
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match=r"video\.mp4: writing \.mp4 needs imageio-ffmpeg"):
            quick(counting, episodes_per_task=1, task_ids=[1], max_steps=5, video_path=tmp_path / "video.mp4")
    assert calls == [] and not any(tmp_path.iterdir())


def test_making_an_env_prints_no_float32_precision_warnings() -> None:
    """OGBench builds Box spaces from float64 bounds; `nfhiql eval` output stays clean of that."""
    import warnings

    from nfhiql_core.evaluation.episodes import make_env
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_env("cube-single-play").close()
    assert not [w for w in caught if "precision lowered" in str(w.message)]
