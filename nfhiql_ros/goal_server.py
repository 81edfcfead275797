"""The planner's goal interface: the `reach_goal` action (nfhiql_interfaces/action/ReachGoal) and the
`teach_goal` / `list_goals` services, over a `GoalBook` (what may be asked) and a `GoalTracker` (how
the goal goes).

One goal at a time. A request is always accepted by the action server and then resolved: one that
the book refuses ends at once with outcome REJECTED and the reason in the result (an action's bare
rejection could not say why). An accepted goal is published to the controller on `goal` (latched,
acknowledged before the first feedback, which in lockstep is the sim's cue to start the episode);
every observation towards it goes through the tracker, feedback at its rate; it ends as succeeded
(the spec's success test or the value threshold), aborted (stall, step budget, a controller stop,
preempted by a new goal, deactivation) or canceled (the client), and then a goal withdrawal (an empty
`goal` message) makes the controller send its safe command at once.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
from nfhiql_interfaces.action import ReachGoal
from nfhiql_interfaces.srv import ListGoals, TeachGoal
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.task import Future

from nfhiql_core.control.goal_tracker import ABORTED, CANCELED, SUCCEEDED, Feedback, GoalTracker, Outcome
from nfhiql_core.control.goals import GoalBook, GoalRejected, GoalRequest

OUTCOME_CODES = {SUCCEEDED: ReachGoal.Result.OUTCOME_SUCCEEDED, ABORTED: ReachGoal.Result.OUTCOME_ABORTED,
                 CANCELED: ReachGoal.Result.OUTCOME_CANCELED}


class GoalServer:
    """`reach_goal`, `teach_goal`, `list_goals` of one planner node (see the module docstring)."""

    def __init__(self, node, book: GoalBook, tracker: GoalTracker, publish_goal: Callable[[np.ndarray | None], None],
                 current: Callable[[], np.ndarray | None], log: Callable[[str], None]):
        self.node, self.book, self.tracker = node, book, tracker
        self.publish_goal, self.current, self.log = publish_goal, current, log
        self.handle = None
        self.done: Future | None = None
        self.entities = [
            ActionServer(node, ReachGoal, "reach_goal", execute_callback=self._execute,
                         goal_callback=lambda request: GoalResponse.ACCEPT, cancel_callback=self._on_cancel,
                         handle_accepted_callback=self._on_accepted),
            node.create_service(TeachGoal, "teach_goal", self._on_teach),
            node.create_service(ListGoals, "list_goals", self._on_list),
        ]

    def destroy(self) -> None:
        """Cleanup: the action server and the services go (an active goal is aborted first)."""
        self.end(Outcome(ABORTED, "the planner was cleaned up"))
        action, *services = self.entities
        action.destroy()
        for service in services:
            self.node.destroy_service(service)

    @property
    def active(self) -> bool:
        return self.done is not None

    # ---- the action

    def _on_accepted(self, handle) -> None:
        if self.active:
            self.end(Outcome(ABORTED, "preempted by a new goal"))
        handle.execute()

    def _on_cancel(self, handle) -> CancelResponse:
        if handle is self.handle:
            self.end(Outcome(CANCELED, "canceled by the client"))
        return CancelResponse.ACCEPT

    async def _execute(self, handle) -> ReachGoal.Result:
        req = handle.request
        try:
            goal = self.book.resolve(GoalRequest(req.name, tuple(req.observation), tuple(req.field_names),
                                                 tuple(req.field_values)), self.current())
        except GoalRejected as exc:
            self.log(f"goal rejected: {exc}")
            handle.abort()
            return ReachGoal.Result(outcome=ReachGoal.Result.OUTCOME_REJECTED, reason=str(exc))
        self.handle, self.done = handle, Future()
        done = self.done
        self.publish_goal(goal)
        self.tracker.start(goal, req.step_budget or None)
        self.log(f"goal accepted ({self._describe(req)}); step budget {self.tracker.budget or 'none'}")
        handle.publish_feedback(self._feedback(self.tracker.feedback()))
        outcome, steps, elapsed, last = await done
        result = ReachGoal.Result(outcome=OUTCOME_CODES[outcome.outcome], reason=outcome.reason, steps=steps,
                                  elapsed_s=elapsed, final_value=last.value if last else math.nan,
                                  final_estimated_steps=last.estimated_steps if last else math.nan,
                                  goal=goal.tolist())
        {SUCCEEDED: handle.succeed, CANCELED: handle.canceled}.get(outcome.outcome, handle.abort)()
        self.log(f"goal {outcome.outcome} after {result.steps} steps: {outcome.reason}")
        return result

    def end(self, outcome: Outcome) -> None:
        """End the active goal: the controller's goal is withdrawn, the client gets `outcome`."""
        if not self.active:
            return
        done, self.done, self.handle = self.done, None, None
        self.publish_goal(None)
        figures = (self.tracker.steps, self.tracker.elapsed_s, self.tracker.last)
        self.tracker.clear()
        done.set_result((outcome, *figures))

    # ---- what the planner feeds in

    def on_observation(self, observation: np.ndarray) -> None:
        """A step towards the active goal: feedback when due, the end when it ends."""
        if not self.active:
            return
        feedback, outcome = self.tracker.on_observation(observation)
        if feedback is not None:
            self.handle.publish_feedback(self._feedback(feedback))
        if outcome is not None:
            self.end(outcome)

    def on_controller(self, stop: Outcome | None, hold: str) -> None:
        """The controller's state: a stop ends the goal; a hold (enable off, deadman) pauses its clock."""
        if not self.active:
            return
        if stop is not None:
            self.end(stop)
        elif hold:
            self.tracker.hold(hold)
        else:
            self.tracker.resume()

    # ---- services

    def _on_teach(self, request: TeachGoal.Request, response: TeachGoal.Response) -> TeachGoal.Response:
        try:
            goal = self.book.teach(request.name, self.current(), request.overwrite)
            response.success, response.message, response.goal = True, f"goal {request.name!r} taught", goal.tolist()
        except GoalRejected as exc:
            response.success, response.message = False, str(exc)
        self.log(f"teach_goal {request.name!r}: {response.message}")
        return response

    def _on_list(self, request: ListGoals.Request, response: ListGoals.Response) -> ListGoals.Response:
        listing = self.book.listing()
        response.names, response.sources = [n for n, _ in listing], [s for _, s in listing]
        return response

    # ---- messages

    @staticmethod
    def _feedback(f: Feedback) -> ReachGoal.Feedback:
        return ReachGoal.Feedback(value=f.value, estimated_steps=f.estimated_steps, progress_per_s=f.progress_per_s,
                                  steps=f.steps, elapsed_s=f.elapsed_s, state=f.state)

    @staticmethod
    def _describe(req) -> str:
        if req.name:
            return f"named {req.name!r}"
        if len(req.observation):
            return "full observation"
        return "fields " + ", ".join(req.field_names)
