"""Operator goals (`control.goals`): resolution of full, partial, named and taught goals, and refusals."""
import math
from pathlib import Path

import numpy as np
import pytest

from nfhiql_core.control.goals import DataRange, GoalBook, GoalRejected, GoalRequest
from nfhiql_core.errors import NfhiqlError
from nfhiql_core.evaluation.episodes import Episode, make_env
from nfhiql_core.interface.spec import load_spec

REPO = Path(__file__).resolve().parents[1]
CUBE_SPEC = load_spec(REPO / "config" / "robots" / "ur5e-robotiq-cube.yaml")


@pytest.fixture(scope="module")
def cube_episode():
    """An OGBench cube task: its start observation and goal observation (28-D)."""
    env = make_env("cube-single-play-v0")
    episode = Episode(env, 2, 0, 7)
    yield episode.observation.astype(np.float64), episode.goal.astype(np.float64)
    env.close()


def cube_book(**kwargs) -> GoalBook:
    return GoalBook(CUBE_SPEC.observation_names, CUBE_SPEC, **kwargs)


def test_a_partial_cube_goal_in_metres_and_yaw_is_the_tasks_goal_where_given(cube_episode) -> None:
    observation, goal = cube_episode
    names = CUBE_SPEC.observation_names
    xyz = goal[[names.index(f"cube_xyz.{c}") for c in "xyz"]] / 10 + [0.425, 0, 0]  # the observation's scaling undone
    yaw = math.atan2(goal[names.index("cube_yaw.sin_yaw")], goal[names.index("cube_yaw.cos_yaw")])
    resolved = cube_book().resolve(GoalRequest(field_names=("cube_xyz", "cube_yaw"),
                                               field_values=(*xyz, yaw)), observation)
    cube = [i for i, n in enumerate(names) if n.startswith(("cube_xyz", "cube_yaw"))]
    np.testing.assert_allclose(resolved[cube], goal[cube], atol=1e-6)
    quat = [i for i, n in enumerate(names) if n.startswith("cube_quat")]
    # the quaternion follows the given yaw (the cube's only rotation in OGBench's tasks), up to its sign
    assert min(np.abs(resolved[quat] - goal[quat]).max(), np.abs(resolved[quat] + goal[quat]).max()) < 1e-5
    arm = [i for i, n in enumerate(names) if not n.startswith("cube")]
    np.testing.assert_array_equal(resolved[arm], observation[arm])  # goal_fill: current


def test_a_reference_fill_takes_the_specs_reference_values(cube_episode) -> None:
    observation, _ = cube_episode
    spec = load_spec(REPO / "config" / "robots" / "ur5e-robotiq-cube.yaml",
                     ["goal_fill=reference", "goal_reference={arm_q: [0, -1.5, 1.5, -1.5, -1.5, 0]}"])
    goal = GoalBook(spec.observation_names, spec).resolve(
        GoalRequest(field_names=("cube_xyz",), field_values=(0.5, 0.1, 0.02)), observation)
    np.testing.assert_array_equal(goal[:6], [0, -1.5, 1.5, -1.5, -1.5, 0])
    np.testing.assert_array_equal(goal[6:12], observation[6:12])  # not in the reference: current


@pytest.mark.parametrize("request_, message", [
    (GoalRequest(), "exactly one"),
    (GoalRequest(name="home", observation=(0.0,)), "exactly one"),
    (GoalRequest(name="home"), "unknown goal name 'home'"),
    (GoalRequest(observation=(0.0,) * 3), "3 values for a goal of 28"),
    (GoalRequest(field_names=("arm_q",), field_values=(0.0,) * 6), "'arm_q' is not a goal field"),
    (GoalRequest(field_names=("cube_xyz",), field_values=(0.5, 0.1)), "too few values (cube_xyz takes 3)"),
    (GoalRequest(field_names=("cube_xyz",), field_values=(0.5, 0.1, 0.0, 1.0)), "1 values left over"),
    (GoalRequest(field_names=("cube_xyz",), field_values=(0.5, math.nan, 0.0)), "non-finite"),
    (GoalRequest(field_names=("cube_xyz", "cube_xyz"), field_values=(0.5, 0.1, 0.0) * 2), "given twice"),
])
def test_bad_requests_are_refused_with_the_reason(cube_episode, request_, message) -> None:
    with pytest.raises(GoalRejected, match=message.replace("(", r"\(").replace(")", r"\)")):
        cube_book().resolve(request_, cube_episode[0])


def test_a_goal_outside_the_training_data_is_refused_naming_the_value(cube_episode) -> None:
    observation, goal = cube_episode
    book = cube_book(data_range=DataRange(np.minimum(observation, goal) - 0.01, np.maximum(observation, goal) + 0.01))
    book.resolve(GoalRequest(observation=tuple(goal)), observation)  # within: accepted
    with pytest.raises(GoalRejected, match=r"cube_xyz.x = 2\d.* outside the training data's range"):
        book.resolve(GoalRequest(field_names=("cube_xyz",), field_values=(3.0, 0.0, 0.02)), observation)


def test_an_implausible_goal_is_refused_with_its_log_likelihood(cube_episode) -> None:
    observation, goal = cube_episode
    book = cube_book(plausibility=lambda obs, g: -float(np.abs(g - obs).sum()), min_log_likelihood=-1.0)
    with pytest.raises(GoalRejected, match=r"implausible from here: log-likelihood -\d+\.\d\d < -1.00"):
        book.resolve(GoalRequest(observation=tuple(goal)), observation)
    book.resolve(GoalRequest(observation=tuple(observation)), observation)  # where it is: plausible


def test_teach_and_named_goals_from_a_file(tmp_path, cube_episode) -> None:
    observation, goal = cube_episode
    book = cube_book()
    np.testing.assert_array_equal(book.teach("here", observation), observation)
    with pytest.raises(GoalRejected, match="exists"):
        book.teach("here", goal)
    book.teach("here", goal, overwrite=True)
    np.testing.assert_array_equal(book.resolve(GoalRequest(name="here"), observation), goal)
    path = tmp_path / "goals.yaml"
    path.write_text("goals:\n  full: {observation: [" + ", ".join(map(str, goal)) + "]}\n"
                    "  corner: {fields: {cube_xyz: [0.5, 0.2, 0.02], cube_yaw: 0.0}}\n")
    spec = load_spec(REPO / "config" / "robots" / "ur5e-robotiq-cube.yaml",
                     ["goal_fill=reference", "goal_reference={" + ", ".join(
                         f"{f.label}: {[0.0, 0.0, 0.0, 1.0] if f.has_quaternion else [0.0] * f.raw_dim}"
                         for f in CUBE_SPEC.observation
                         if not f.label.startswith("cube")) + "}"])
    book = GoalBook(spec.observation_names, spec)
    book.load_file(path)
    assert book.listing() == [("full", "file"), ("corner", "file")]
    corner = book.resolve(GoalRequest(name="corner"), None)
    np.testing.assert_allclose(corner[spec.observation_names.index("cube_xyz.y")], 2.0)
    path.write_text("goals:\n  bad: {fields: {cube_xyz: [0.5]}}\n")
    with pytest.raises(NfhiqlError, match=r"goals.yaml: goals.bad: field_values: too few values"):
        book.load_file(path)


def test_field_values_read_a_goals_fields_as_a_request_gives_them(cube_episode) -> None:
    """`field_values` undoes the fields' mapping (metres, one yaw for the quaternion), so requesting them
    again resolves to the same cube part; `PartialGoalPolicy` uses it for each episode's first step."""
    from nfhiql_core.evaluation.partial_goals import PartialGoalPolicy

    observation, goal = cube_episode
    book, names = cube_book(), CUBE_SPEC.observation_names
    values = book.field_values(goal, ("cube_xyz", "cube_quat"))
    np.testing.assert_allclose(values[:3], goal[[names.index(f"cube_xyz.{c}") for c in "xyz"]] / 10 + [0.425, 0, 0])
    assert values[3] == pytest.approx(math.atan2(goal[names.index("cube_yaw.sin_yaw")],
                                                 goal[names.index("cube_yaw.cos_yaw")]), abs=1e-5)
    with pytest.raises(GoalRejected, match="'table' is not an observation field"):
        book.field_values(goal, ("table",))

    seen = []

    class Policy:
        def reset(self, env_indices):
            pass

        def __call__(self, observations, goals, env_indices):
            seen.append(goals.copy())
            return np.zeros((len(env_indices), 5))

    partial = PartialGoalPolicy(Policy(), book, ("cube_xyz", "cube_yaw"))
    moved = observation.copy()
    moved[0] += 0.3  # the arm moves on: the goal's filled part stays what it was at the episode's start
    for obs in (observation, moved):
        partial(obs[None], goal[None], np.array([0]))
    cube = [i for i, n in enumerate(names) if n.startswith(("cube_xyz", "cube_yaw"))]
    np.testing.assert_allclose(seen[0][0, cube], goal[cube], atol=1e-6)
    assert seen[0][0, 0] == observation[0] and np.array_equal(seen[0], seen[1])
    partial.reset(np.array([0]))
    partial(moved[None], goal[None], np.array([0]))
    assert seen[2][0, 0] == moved[0]  # a new episode: filled from its own start
