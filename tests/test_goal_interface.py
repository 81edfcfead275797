"""The planner's `reach_goal` action over DDS, planner and controller as real processes (test_policy_nodes'
fixtures: its test bundle, driver, domains and hard timeout): a refused goal ends REJECTED with the
reason; an accepted goal gets feedback and policy commands; canceling it gives the safe command within
two control periods and the CANCELED result."""
from __future__ import annotations

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
ReachGoal = pytest.importorskip("nfhiql_interfaces.action").ReachGoal

from rclpy.action import ActionClient  # noqa: E402
from test_policy_nodes import (  # noqa: E402,F401  (fixtures used by name)
    DDS_SLACK_S,
    PERIOD,
    all_commands_finite_and_in_bounds,
    bundle,
    common,
    is_zero,
    ros,
    runtime,
)


def wait_for(driver, future, seconds: float = 10.0, every=None):
    assert driver.spin(seconds, until=future.done, every=every), "no answer from reach_goal"
    return future.result()


def test_reach_goal_rejects_with_a_reason_pursues_and_cancels_to_a_safe_stop(ros, bundle) -> None:  # noqa: F811
    driver, launch = ros
    shared = common(bundle, replan_every=1)
    launch("subgoal_planner", shared)
    launch("flow_controller", {**shared, "trigger": "timer"})
    driver.wait_for_graph(observation_subs=2, subgoal_subs=1)
    client = ActionClient(driver.node, ReachGoal, "reach_goal")
    assert driver.spin(10.0, until=client.server_is_ready), "no reach_goal server"
    obs = np.array([2.0, 2.0])
    publish = lambda: driver.publish_obs(obs)  # noqa: E731 (the robot stands still)

    handle = wait_for(driver, client.send_goal_async(ReachGoal.Goal(observation=[1.0, 2.0, 3.0])),
                      every=(PERIOD, publish))
    result = wait_for(driver, handle.get_result_async(), every=(PERIOD, publish)).result
    assert result.outcome == ReachGoal.Result.OUTCOME_REJECTED and "3 values for a goal of 2" in result.reason

    feedback: list = []
    handle = wait_for(driver, client.send_goal_async(ReachGoal.Goal(observation=[8.0, 8.0]),
                                                     feedback_callback=lambda m: feedback.append(m.feedback)),
                      every=(PERIOD, publish))
    assert handle.accepted
    assert driver.spin(5.0, until=lambda: len(feedback) >= 2, every=(PERIOD, publish)), "no feedback"
    assert feedback[0].state == "pursuing" and feedback[-1].steps >= 1
    n = len(driver.commands)
    driver.spin(1.0, every=(PERIOD, publish))
    assert sum(not is_zero(v) for _, _, v in driver.commands[n:]) >= 5, "no policy commands towards the goal"

    n = len(driver.commands)
    canceled_at = driver.now()
    handle.cancel_goal_async()
    result = wait_for(driver, handle.get_result_async(), every=(PERIOD, publish)).result
    driver.spin(1.0, every=(PERIOD, publish))
    after = [(t, v) for t, _, v in driver.commands[n:] if t > canceled_at]
    first_safe = next(t for t, v in after if is_zero(v))
    print(f"safe command {(first_safe - canceled_at) / 1e6:.1f} ms after the cancel request")
    assert (first_safe - canceled_at) / 1e9 <= 2 * PERIOD + DDS_SLACK_S
    assert all(is_zero(v) for t, v in after if t >= first_safe)  # and only safe ones while there is no goal
    assert result.outcome == ReachGoal.Result.OUTCOME_CANCELED and result.steps >= 1
    np.testing.assert_allclose(result.goal, [8.0, 8.0])


def test_a_goal_without_progress_is_aborted_as_stalled_then_a_step_budget_ends_one(ros, bundle) -> None:  # noqa: F811
    """The robot stands still: the value-estimated steps to go stop falling, and after `stall_time_s`
    the goal ends ABORTED naming the stall, with the safe command. A goal's own step budget ends the
    next one ABORTED naming the budget."""
    driver, launch = ros
    stall = 1.0
    shared = common(bundle, replan_every=1)
    launch("subgoal_planner", {**shared, "stall_time_s": stall, "progress_period_s": 0.2})
    launch("flow_controller", {**shared, "trigger": "timer", "ood_alarm": False})
    driver.wait_for_graph(observation_subs=2, subgoal_subs=1)
    client = ActionClient(driver.node, ReachGoal, "reach_goal")
    assert driver.spin(10.0, until=client.server_is_ready), "no reach_goal server"
    obs = np.array([2.0, 2.0])
    publish = lambda: driver.publish_obs(obs)  # noqa: E731 (commands are not executed: no progress)

    feedback: list = []
    sent = driver.now()
    handle = wait_for(driver, client.send_goal_async(ReachGoal.Goal(observation=[8.0, 8.0]),
                                                     feedback_callback=lambda m: feedback.append(m.feedback)),
                      every=(PERIOD, publish))
    result = wait_for(driver, handle.get_result_async(), 15.0, every=(PERIOD, publish)).result
    ended = driver.now()
    n = len(driver.commands)
    driver.spin(0.5, every=(PERIOD, publish))
    print(f"stalled goal ended after {(ended - sent) / 1e9:.2f} s (stall_time_s {stall}): {result.reason}")
    assert result.outcome == ReachGoal.Result.OUTCOME_ABORTED and "stalled" in result.reason
    assert stall <= (ended - sent) / 1e9 <= stall + 3.0
    estimates = [f.estimated_steps for f in feedback if np.isfinite(f.estimated_steps)]
    assert estimates and min(estimates) > estimates[0] - 1.0  # no progress (min_progress_steps 1)
    assert driver.commands[n:] and all(is_zero(v) for _, _, v in driver.commands[n:])

    handle = wait_for(driver, client.send_goal_async(ReachGoal.Goal(observation=[8.0, 8.0], step_budget=5)),
                      every=(PERIOD, publish))
    result = wait_for(driver, handle.get_result_async(), 15.0, every=(PERIOD, publish)).result
    assert result.outcome == ReachGoal.Result.OUTCOME_ABORTED and "budget" in result.reason, result.reason
    assert 5 <= result.steps <= 7
