"""`subgoal_planner`: the bundle's high-level policy, re-planning every `replan_every` observations.

Subscribes the observation — with an `interface` the robot's own topics, assembled like the
controller's (`control.assembly`; realtime: sampled every control period), else `observation` —
(sensor QoS; lossless LOCKSTEP_QOS with trigger `observation`) and `goal` (latched); publishes
`subgoal` (stamped with the observation it was planned from) and `subgoal/log_likelihood`
(std_msgs/Float64, published first), both RELIABLE. Which observations are planned on is
`nfhiql_core.control.PlannerCore`'s decision (the shared re-plan rule, docs/design/lockstep.md);
`rate_hz` > 0 sets replan_every from a rate instead (realtime only).
"""
from __future__ import annotations

import sys
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.duration import Duration
from rclpy.qos import QoSProfile
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64, String

from nfhiql_core.atomic_io import save_json
from nfhiql_core.control.assembly import Assembled, ObservationAssembler
from nfhiql_core.control.goal_tracker import ABORTED, GoalTracker, Outcome, SuccessTest, stop_outcome
from nfhiql_core.control.goals import GoalBook, data_range_from
from nfhiql_core.control.intake import Rejected
from nfhiql_core.control.planner import PlannerCore, PlanRequest
from nfhiql_core.control.progress import ProgressConfig, value_of_steps
from nfhiql_core.deploy.runtime import NonFiniteOutputError
from nfhiql_core.deploy.value_runtime import ValueRuntime
from nfhiql_ros.contract import PlannerParams
from nfhiql_ros.diagnostics import OK, WARN, percentiles_ms, status_array
from nfhiql_ros.executors import run_node
from nfhiql_ros.goal_server import GoalServer
from nfhiql_ros.managed import ManagedNode
from nfhiql_ros.policy_common import (
    load_runtime,
    observation_qos,
    provider_names,
    replan_every,
    resolve_interface,
    wait_for_topics,
)
from nfhiql_ros.robot_io import observation_topics, subscribe
from nfhiql_ros.ros_io import LATCHED_QOS, STATE_QOS, stamp_to_ns, vector_fields, vector_msg, vector_names

STOPS = ("estop", "workspace", "ood", "inactive", "non_finite_output")  # controller states that end a goal
HOLDS = ("disabled", "deadman")  # controller states that pause it
GOAL_ACK_TIMEOUT_S = 1.0  # how long a new goal waits for the controller to acknowledge it


def observations_per_plan(params: PlannerParams, every: int, control_period_s: float | None) -> int:
    """replan_every, or the observation count that rate_hz amounts to at the bundle's control period."""
    if params.rate_hz == 0:
        return every
    if not control_period_s:
        raise ValueError("rate_hz needs the bundle's control period, which this bundle does not have: "
                         "set replan_every instead")
    return max(1, round(1.0 / (params.rate_hz * control_period_s)))


class SubgoalPlanner(ManagedNode):
    """High-level policy node: topics in, `PlannerCore` decisions, subgoals out (a managed node)."""

    def __init__(self, **node_kwargs) -> None:  # node_kwargs: rclpy Node's (context, cli_args, ...)
        super().__init__("subgoal_planner", PlannerParams, **node_kwargs)

    def configure(self) -> None:
        """Load and verify the bundle, create the publishers and the goal input, check the robot's topics."""
        self.runtime = load_runtime(self, self.params)
        meta = self.runtime.metadata
        self.every = observations_per_plan(self.params, replan_every(self.params, self.runtime),
                                           meta.control_period_s)
        self.core = PlannerCore(meta.obs_dim, meta.goal_dim, meta.observation_names, meta.goal_names, self.every,
                                self.params.trigger == "observation", int(1e9 * self.params.max_clock_skew_s))
        self.subgoal_names = vector_names("subgoal", meta.subgoal_dim)
        self.plans = 0
        self.plan_s: list[float] = []
        self.all_plan_s: list[float] = []
        self.failures = 0
        own = lambda entity: self.own(entity, "configured")  # noqa: E731
        # `goal` first: when a goal and the next observation are ready together, the goal is taken first.
        own(self.create_subscription(JointState, "goal", self.on_goal, LATCHED_QOS))
        self.log_likelihood_pub = own(self.create_publisher(Float64, "subgoal/log_likelihood", STATE_QOS))
        self.subgoal_pub = own(self.create_publisher(JointState, "subgoal", STATE_QOS))
        self.diagnostics_pub = own(self.create_publisher(DiagnosticArray, "/diagnostics", QoSProfile(depth=10)))
        own(self.create_timer(self.params.diagnostics_period_s, self.publish_diagnostics))
        self.spec = resolve_interface(self.params, self.runtime)
        self.goal_pub = own(self.create_publisher(JointState, "goal", LATCHED_QOS))
        self.own_goal_stamp = 0
        self.goals = own(self.make_goal_server())
        own(self.create_subscription(String, "safety_state", self.on_safety_state, LATCHED_QOS))
        self.assembler = None
        if self.spec is not None:
            self.assembler = ObservationAssembler(self.spec, int(1e9 * self.params.max_clock_skew_s),
                                                  lockstep=self.params.trigger == "observation")
            wait_for_topics(self, observation_topics(self.spec), {}, self.params.topic_wait_s)
        self.get_logger().info(f"planning every {self.every} observations (trigger {self.params.trigger})")

    def make_goal_server(self) -> GoalServer:
        """The goal book (data range, plausibility, named goals) and tracker (success test, value, progress)."""
        p, meta = self.params, self.runtime.metadata
        threshold = meta.ood_threshold("high")
        plausible = p.check_goal_plausibility and threshold is not None
        spec = self.spec or meta.interface_spec()  # goal fields and the success test, whatever the I/O path
        book = GoalBook(meta.goal_names, spec, data_range_from(meta.data_range, meta.goal_dim),
                        p.goal_range_margin, (lambda obs, goal: float(self.runtime.plan(obs, goal)[1])) if plausible
                        else None, threshold - p.goal_plausibility_margin if plausible else None)
        if p.goals_file:
            book.load_file(p.goals_file)
        value = ValueRuntime.from_bundle(p.bundle, provider_names(p.providers))
        if value is None:
            self.get_logger().warning("the bundle has no value model (value.onnx): goals get no progress estimate "
                                      "and no stall detection")
        period = meta.control_period_s or 1.0
        discount = value.discount if value is not None else 0.99
        success_value = value_of_steps(p.success_steps, discount) if p.success_steps else None
        progress = ProgressConfig(p.stall_time_s, p.min_progress_steps, p.step_budget or None, success_value)
        tracker = GoalTracker(SuccessTest(spec), progress, discount, period,
                              max(1, round(p.progress_period_s / period)), value.value if value else None)
        return GoalServer(self, book, tracker, self.publish_goal, lambda: self.core.latest, self.get_logger().info)

    def publish_goal(self, goal: np.ndarray | None) -> None:
        """The goal to the controller (and this node's core); None withdraws it (the controller stops)."""
        stamp = self.own_goal_stamp = max(self.now_ns(), self.own_goal_stamp + 1)
        if goal is None:
            self.core.on_goal_cleared(stamp, stamp)
            msg = vector_msg((), (), stamp)
        else:
            self.core.on_goal(goal, stamp, (), stamp)
            msg = vector_msg(goal, self.runtime.metadata.goal_names, stamp)
        self.goal_pub.publish(msg)
        if not self.goal_pub.wait_for_all_acked(Duration(seconds=GOAL_ACK_TIMEOUT_S)):
            self.get_logger().warning(f"goal not acknowledged by every subscriber within {GOAL_ACK_TIMEOUT_S} s")

    def on_safety_state(self, msg: String) -> None:
        state, _, detail = msg.data.partition(": ")
        self.goals.on_controller(stop_outcome(state, detail, STOPS), state if state in HOLDS else "")

    def activate(self) -> None:
        """Subscribe the observation (with an interface the robot's topics; realtime: sample the assembly
        each control period)."""
        qos = observation_qos(self.params)
        if self.spec is None:
            self.own(self.create_subscription(JointState, "observation", self.on_observation, qos), "active")
            return
        for sub in subscribe(self, observation_topics(self.spec), self.on_robot_message, qos):
            self.own(sub, "active")
        if self.params.trigger == "timer":
            self.own(self.create_timer(self.spec.period_ns / 1e9, self.on_sample), "active")

    def deactivate(self) -> None:
        """No more plans; an active goal is aborted (its withdrawal stops the controller)."""
        self.goals.end(Outcome(ABORTED, "the planner was deactivated"))

    def now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def on_goal(self, msg: JointState) -> None:
        """A goal on the topic (a sim's, an operator's), not one this node published for an action goal."""
        if stamp_to_ns(msg.header.stamp) == self.own_goal_stamp:
            return
        try:
            if msg.position:
                self.core.on_goal(*vector_fields(msg), self.now_ns())
            else:  # a withdrawal
                self.core.on_goal_cleared(stamp_to_ns(msg.header.stamp), self.now_ns())
        except Rejected as exc:
            self.get_logger().warning(f"dropped a message: {exc}", throttle_duration_sec=1.0)

    def on_observation(self, msg: JointState) -> None:
        self._observe(lambda now: self.core.on_observation(*vector_fields(msg), now))

    def on_robot_message(self, topic: str, msg) -> None:
        """Lockstep: a complete state of the robot's topics is an observation."""
        now = self.now_ns()
        try:
            result = self.assembler.on_message(topic, msg, now)
        except Rejected as exc:
            self.get_logger().warning(f"dropped a message: {exc}", throttle_duration_sec=1.0)
            return
        if result is not None and self.params.trigger == "observation":
            self._observe(lambda now: self.core.on_observation(result.values, result.stamp, (), now))

    def on_sample(self) -> None:
        """Realtime: the assembled observation, when usable and new, counts as one observation."""
        result = self.assembler.assemble(self.now_ns())
        stamp = self.core.observation.stamp
        if isinstance(result, Assembled) and (stamp is None or result.stamp > stamp):
            self._observe(lambda now: self.core.on_observation(result.values, result.stamp, (), now))

    def _observe(self, handle) -> None:
        try:
            request = handle(self.now_ns())
        except Rejected as exc:
            self.get_logger().warning(f"dropped a message: {exc}", throttle_duration_sec=1.0)
            return
        if request is not None:
            self.plan(request)
        if self.core.towards_goal:
            self.goals.on_observation(self.core.latest)

    def plan(self, request: PlanRequest) -> None:
        start = time.perf_counter()
        try:
            subgoal, log_prob = self.runtime.plan(request.observation, request.goal)
        except NonFiniteOutputError as exc:  # publish nothing: the controller's subgoal timeout stops safely
            self.failures += 1
            self.get_logger().error(str(exc), throttle_duration_sec=1.0)
            return
        # The log-likelihood first: a controller acting on the subgoal then already has its score.
        self.log_likelihood_pub.publish(Float64(data=float(log_prob)))
        self.subgoal_pub.publish(vector_msg(subgoal, self.subgoal_names, request.stamp))
        self.plans += 1
        elapsed = time.perf_counter() - start
        self.plan_s.append(elapsed)
        self.all_plan_s.append(elapsed)

    def summary(self) -> dict:
        """The run's figures (the report file)."""
        p50, p99 = percentiles_ms(self.all_plan_s)
        return {"node": "subgoal_planner", "plans": self.plans, "replan_every": self.every,
                "plan_ms_p50": None if np.isnan(p50) else round(p50, 4),
                "plan_ms_p99": None if np.isnan(p99) else round(p99, 4),
                "dropped": dict(sorted(self.core.dropped.items())), "non_finite_plans": self.failures,
                "provider": self.runtime.providers[0]}

    def publish_diagnostics(self) -> None:
        p50, p99 = percentiles_ms(self.plan_s)
        self.plan_s = []
        dropped = self.core.unexpected_drops()
        level = WARN if self.failures or dropped else OK
        values = {"plans": self.plans, "replan_every": self.every, "plan_ms_p50": p50, "plan_ms_p99": p99,
                  "dropped": dropped, **{f"dropped_{k}": n for k, n in sorted(self.core.dropped.items())},
                  "non_finite_plans": self.failures, "provider": self.runtime.providers[0],
                  "has_goal": self.core.goal is not None}
        message = "planning" if self.core.goal is not None else "waiting for a goal"
        self.diagnostics_pub.publish(status_array(self.now_ns(), self.get_fully_qualified_name(), level, message,
                                                  values, self.params.bundle))

    def finish(self) -> None:
        self.goals.end(Outcome(ABORTED, "the planner is shutting down"))
        self.publish_diagnostics()
        if self.params.report_file:
            save_json(self.params.report_file, self.summary())
        self.get_logger().info(f"shutting down after {self.plans} plans ({sum(self.core.dropped.values())} "
                               f"messages dropped, {self.failures} non-finite plans)")


def main(args: list[str] | None = None) -> int:
    return run_node(SubgoalPlanner, args)


if __name__ == "__main__":
    sys.exit(main())
