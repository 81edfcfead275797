"""mujoco_sim as an operator: each episode's goal sent through the planner's `reach_goal` action.

`send(goal, on_started)` sends the goal observation and calls `on_started()` on the goal's first
feedback (the planner has published it to the controller: the episode may begin); every finite
value-estimated steps to go of the feedback is kept, the first as the episode's estimate at the
start. `finish(on_done)` ends the episode's goal: if it has not ended within SETTLE_S of the
episode's last state (the env ended the episode first, e.g. at its time limit) it is canceled;
then `on_done(GoalRecord)` with the goal's outcome, reason and estimates. A goal that gets no answer
within `timeout_s` is recorded as such and the run goes on.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from nfhiql_interfaces.action import ReachGoal
from rclpy.action import ActionClient
from rclpy.node import Node

SETTLE_S = 1.0  # how long a goal may take to end on the episode's last state before it is canceled
OUTCOMES = {ReachGoal.Result.OUTCOME_SUCCEEDED: "succeeded", ReachGoal.Result.OUTCOME_ABORTED: "aborted",
            ReachGoal.Result.OUTCOME_CANCELED: "canceled", ReachGoal.Result.OUTCOME_REJECTED: "rejected"}


@dataclass
class GoalRecord:
    outcome: str = "no answer"
    reason: str = ""
    estimated_steps_at_start: float | None = None
    estimates: list[float] = field(default_factory=list)  # the feedback's finite estimated steps, in order
    goal_steps: int = 0  # control steps the planner counted towards the goal


class EpisodeGoals:
    """The sim's action client (see the module docstring)."""

    def __init__(self, node: Node, timeout_s: float):
        self.node, self.timeout_s = node, timeout_s
        self.client = ActionClient(node, ReachGoal, "reach_goal")
        self.handle = None
        self.record = GoalRecord()
        self.result_future = None
        self.on_started: Callable[[], None] | None = None
        self.on_done: Callable[[GoalRecord], None] | None = None
        self.timer = None

    def ready(self) -> bool:
        return self.client.server_is_ready()

    def send(self, goal: np.ndarray, on_started: Callable[[], None]) -> None:
        self.record, self.handle, self.result_future, self.on_done = GoalRecord(), None, None, None
        self.on_started = on_started
        request = ReachGoal.Goal(observation=[float(v) for v in goal])
        self.client.send_goal_async(request, feedback_callback=self._on_feedback).add_done_callback(self._on_response)
        self._arm(self._no_answer)

    def finish(self, on_done: Callable[[GoalRecord], None]) -> None:
        """The episode is over: the goal's result (canceling it if it still runs), then `on_done`."""
        self.on_done = on_done
        if self.result_future is not None and self.result_future.done():
            self._done()
        elif self.handle is not None:  # the planner may still be judging the last state: then cancel
            self._arm(self._cancel, SETTLE_S)
        else:
            self._done()

    # ---- callbacks

    def _on_response(self, future) -> None:
        handle = future.result()
        if not handle.accepted:  # the planner accepts every request and rejects with a reason in the result
            self.record.outcome = "not accepted"
            self._start()
            return
        self.handle = handle
        self.result_future = handle.get_result_async()
        self.result_future.add_done_callback(self._on_result)

    def _on_feedback(self, msg) -> None:
        feedback = msg.feedback
        if math.isfinite(feedback.estimated_steps):
            self.record.estimates.append(float(feedback.estimated_steps))
            if self.record.estimated_steps_at_start is None:
                self.record.estimated_steps_at_start = self.record.estimates[0]
        self._start()

    def _on_result(self, future) -> None:
        result = future.result().result
        self.record.outcome = OUTCOMES.get(result.outcome, str(result.outcome))
        self.record.reason, self.record.goal_steps = result.reason, int(result.steps)
        if result.outcome == ReachGoal.Result.OUTCOME_REJECTED:
            self._start()  # the episode runs without a goal (the controller stays safe): it fails
        if self.on_done is not None:
            self._done()

    def _start(self) -> None:
        if self.on_started is not None:
            self._disarm()
            started, self.on_started = self.on_started, None
            started()

    def _done(self) -> None:
        self._disarm()
        done, self.on_done = self.on_done, None
        if done is not None:
            done(self.record)

    def _cancel(self) -> None:
        self.handle.cancel_goal_async()
        self._arm(self._no_answer)

    def _no_answer(self) -> None:
        self._disarm()
        self.node.get_logger().warning(f"reach_goal: no answer within {self.timeout_s:g} s")
        if self.on_started is not None:
            self._start()
        elif self.on_done is not None:
            self._done()

    def _arm(self, callback, seconds: float | None = None) -> None:
        self._disarm()
        self.timer = self.node.create_timer(self.timeout_s if seconds is None else seconds, callback)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.node.destroy_timer(self.timer)
            self.timer = None
