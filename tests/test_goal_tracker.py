"""A goal's life in the planner (`control.goal_tracker`): success test, progress feedback, stall, budget, holds."""
from pathlib import Path

import numpy as np

from nfhiql_core.control.goal_tracker import ABORTED, SUCCEEDED, GoalTracker, SuccessTest, stop_outcome
from nfhiql_core.control.progress import ProgressConfig
from nfhiql_core.interface.spec import load_spec

REPO = Path(__file__).resolve().parents[1]
MAZE = load_spec(REPO / "config" / "robots" / "pointmaze.yaml")  # observation = goal = (x, y); tolerance 1.0
GAMMA = 0.99


def value_of_distance(observation: np.ndarray, goal: np.ndarray) -> float:
    """A value function of a point that moves one unit per step: V = -(1 - γ^n) / (1 - γ), n = distance."""
    n = float(np.linalg.norm(goal - observation))
    return -(1 - GAMMA ** n) / (1 - GAMMA)


def tracker(**config) -> GoalTracker:
    return GoalTracker(SuccessTest(MAZE), ProgressConfig(**config), GAMMA, period_s=0.1, progress_every=2,
                       value=value_of_distance)


def test_feedback_estimates_the_steps_to_go_and_the_success_test_ends_the_goal() -> None:
    t = tracker()
    t.start(np.array([10.0, 0.0]))
    estimates = []
    for x in range(0, 12):
        feedback, outcome = t.on_observation(np.array([float(x), 0.0]))
        if feedback is not None and outcome is None:
            estimates.append(feedback.estimated_steps)
        if outcome is not None:
            break
    assert outcome.outcome == SUCCEEDED and "xy within 1 (tolerance 1)" in outcome.reason
    assert t.steps == 10  # x = 9: within 1.0 of 10
    np.testing.assert_allclose(estimates, [10.0, 9.0, 7.0, 5.0, 3.0], atol=1e-6)  # 1st and every 2nd step
    assert feedback.elapsed_s == 1.0 and feedback.state == "pursuing"


def test_a_goal_that_makes_no_progress_is_aborted_as_stalled_and_a_hold_pauses_the_clock() -> None:
    t = tracker(stall_time_s=1.0, min_progress_steps=0.5)
    t.start(np.array([10.0, 0.0]))
    here = np.array([0.0, 0.0])
    t.hold("enable off")
    for _ in range(30):  # 3 s held: no verdict
        feedback, outcome = t.on_observation(here)
        assert outcome is None
    assert feedback is None or feedback.state == "holding (enable off)"
    t.resume()
    outcomes = [t.on_observation(here)[1] for _ in range(30)]
    first = next(i for i, o in enumerate(outcomes) if o is not None)
    assert outcomes[first].outcome == ABORTED and outcomes[first].reason.startswith("stalled: ")
    assert 9 <= first <= 12  # 1 s = 10 steps after resuming (evaluated every 2nd step)


def test_the_step_budget_of_a_request_ends_the_goal() -> None:
    t = tracker()
    t.start(np.array([100.0, 0.0]), step_budget=6)
    for x in range(8):
        _, ended = t.on_observation(np.array([float(x), 0.0]))
        if ended is not None:
            break
    assert ended.outcome == ABORTED and ended.reason.startswith("budget: ") and t.steps == 6


def test_a_controller_stop_is_the_goals_abort_reason() -> None:
    assert stop_outcome("estop", "pressed", ("estop", "workspace")) == (ABORTED, "safe stop: estop (pressed)")
    assert stop_outcome("disabled", "", ("estop", "workspace")) is None
