"""Tests for nfhiql_core.data.goal_sampler against OGBench's GCDataset/HGCDataset semantics."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from nfhiql_core.data.dataset import Dataset
from nfhiql_core.data.goal_sampler import GoalSamplerConfig, HierarchicalGoalSampler
from nfhiql_core.errors import ConfigError

K = 25
TRAJ_ONLY = {"value_p_curgoal": 0.0, "value_p_trajgoal": 1.0, "value_p_randomgoal": 0.0}


def make_dataset(traj_lens) -> Dataset:
    """Compact dataset whose observation column 0 is the row index (so goals decode to indices)."""
    n = int(np.sum(traj_lens))
    obs = np.stack([np.arange(n), np.zeros(n)], axis=1).astype(np.float32)
    terminals = np.zeros(n, dtype=np.float32)
    terminals[np.cumsum(traj_lens) - 1] = 1.0
    actions = np.arange(n, dtype=np.float32)[:, None]
    return Dataset.from_arrays(obs, actions, terminals)


def sample(ds: Dataset, batch: int = 50_000, seed: int = 0, **overrides) -> dict[str, np.ndarray]:
    config = GoalSamplerConfig(subgoal_steps=K, **overrides)
    return HierarchicalGoalSampler(ds, config).sample(batch, np.random.default_rng(seed))


@pytest.fixture(scope="module")
def many() -> Dataset:
    return make_dataset([200] * 100)


@pytest.fixture(scope="module")
def ragged() -> Dataset:
    return make_dataset([2, 3, 10, 30, 60, 27, 5, 120])


def later_in_trajectory(goal, idx, end):
    """True where goal lies later in idx's trajectory (idx < goal <= end)."""
    return (goal > idx) & (goal <= end)


def test_value_goal_mixture_fractions(many):
    b = sample(many, batch=100_000)
    idx, goal = b["idxs"], b["value_goal_idxs"]
    end = many.traj_ends[idx]
    cur = goal == idx
    traj = later_in_trajectory(goal, idx, end)
    # Small leakage: a trajectory goal equals idx when idx is its end; random goals can land in-trajectory.
    assert abs(cur.mean() - 0.2) < 0.01
    assert abs(traj.mean() - 0.5) < 0.01
    assert abs((~cur & ~traj).mean() - 0.3) < 0.01
    assert many.valids[goal].all()


def test_indices_valid_and_fields_consistent(ragged):
    b = sample(ragged, batch=20_000)
    idx = b["idxs"]
    assert ragged.valids[idx].all()
    obs = ragged.observations
    np.testing.assert_array_equal(b["observations"], obs[idx])
    np.testing.assert_array_equal(b["next_observations"][:, 0], idx + 1)
    np.testing.assert_array_equal(b["actions"][:, 0], idx)
    for obs_key, idx_key in [
        ("value_goals", "value_goal_idxs"),
        ("low_actor_goals", "low_actor_goal_idxs"),
        ("high_actor_goals", "high_actor_goal_idxs"),
        ("high_actor_targets", "high_actor_target_idxs"),
    ]:
        np.testing.assert_array_equal(b[obs_key][:, 0], b[idx_key])
    for key, value in b.items():
        assert value.dtype == (np.int64 if key.endswith("idxs") else np.float32), key
        assert len(value) == 20_000


@pytest.mark.parametrize("geom", [True, False])
def test_trajectory_goals_stay_in_trajectory(ragged, geom):
    b = sample(ragged, **TRAJ_ONLY, value_geom_sample=geom)
    idx, goal = b["idxs"], b["value_goal_idxs"]
    end = ragged.traj_ends[idx]
    assert np.all(goal <= end)
    assert np.all((goal > idx) | ((goal == idx) & (idx == end)))
    assert np.any(goal == end)  # capping is exercised


def test_geometric_offsets_mean():
    ds = make_dataset([100_001])
    b = sample(ds, **TRAJ_ONLY)
    idx, goal = b["idxs"], b["value_goal_idxs"]
    uncapped = idx + 2_000 <= ds.traj_ends[idx]  # P(offset > 2000) ~ 1e-9
    offsets = goal[uncapped] - idx[uncapped]
    assert offsets.min() >= 1
    assert abs(offsets.mean() - 1 / (1 - 0.99)) < 3.0  # std 99.5 / sqrt(~49k) ~ 0.45
    capped = ~uncapped
    assert np.all(goal[capped] <= ds.traj_ends[idx[capped]])


def test_uniform_trajectory_goals_cover_the_rest_of_the_trajectory(many):
    b = sample(many, **TRAJ_ONLY, value_geom_sample=False)
    idx, goal = b["idxs"], b["value_goal_idxs"]
    end = many.traj_ends[idx]
    far = end - idx >= 20
    position = (goal[far] - idx[far] - 1) / (end[far] - idx[far] - 1)
    assert abs(position.mean() - 0.5) < 0.02 and position.min() >= 0 and position.max() <= 1


@pytest.mark.parametrize("gc_negative", [True, False])
def test_rewards_and_masks_follow_index_equality(ragged, gc_negative):
    b = sample(ragged, gc_negative=gc_negative)
    success = b["idxs"] == b["value_goal_idxs"]
    np.testing.assert_array_equal(b["rewards"], np.where(success, 0.0, -1.0) + (0.0 if gc_negative else 1.0))
    np.testing.assert_array_equal(b["masks"], np.where(success, 0.0, 1.0))
    assert 0.1 < success.mean() < 0.4


def test_low_actor_goals_capped_at_trajectory_end(ragged):
    b = sample(ragged)
    idx, low = b["idxs"], b["low_actor_goal_idxs"]
    end = ragged.traj_ends[idx]
    np.testing.assert_array_equal(low, np.minimum(idx + K, end))
    assert np.any(low == end) and np.any(low == idx + K)
    short = ragged.valids[:2].sum()  # first trajectory: one valid transition
    assert np.all(low[idx < short] == 0)


@pytest.mark.parametrize("geom", [True, False])
def test_high_actor_targets(ragged, geom):
    b = sample(ragged, actor_p_trajgoal=0.5, actor_p_randomgoal=0.5, actor_geom_sample=geom)
    idx, goal, target = b["idxs"], b["high_actor_goal_idxs"], b["high_actor_target_idxs"]
    end = ragged.traj_ends[idx]
    in_traj = (goal >= idx) & (goal <= end)
    traj_rule = target == np.minimum(idx + K, goal)
    random_rule = target == np.minimum(idx + K, end)
    assert np.all(traj_rule | random_rule)
    assert np.all(random_rule[~in_traj])
    assert np.all(target >= idx) and np.all(target <= end)
    assert 0.4 < (~in_traj).mean() < 0.5  # random half, minus those landing in-trajectory

    b = sample(ragged, actor_geom_sample=geom)  # default: trajectory goals only
    idx, goal, target = b["idxs"], b["high_actor_goal_idxs"], b["high_actor_target_idxs"]
    assert np.all((goal >= idx) & (goal <= ragged.traj_ends[idx]))
    np.testing.assert_array_equal(target, np.minimum(idx + K, goal))
    assert np.all(target <= goal)


def test_same_seed_same_batch(ragged):
    a, b, c = sample(ragged, seed=7), sample(ragged, seed=7), sample(ragged, seed=8)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["idxs"], c["idxs"])


@pytest.mark.parametrize(
    "overrides",
    [
        {"value_p_curgoal": 0.3},
        {"value_p_curgoal": -0.1, "value_p_trajgoal": 0.8},
        {"actor_p_trajgoal": 0.9},
        {"actor_p_curgoal": 0.5, "actor_p_trajgoal": 0.5},
        {"discount": 1.0},
        {"subgoal_steps": 0},
    ],
)
def test_invalid_config_raises(ragged, overrides):
    config = dataclasses.replace(GoalSamplerConfig(), **overrides)
    with pytest.raises(ConfigError):
        HierarchicalGoalSampler(ragged, config)
