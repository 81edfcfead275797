"""`subgoal_planner`: the bundle's high-level policy, re-planning every `replan_every` observations.

Subscribes `observation` (sensor QoS; lossless LOCKSTEP_QOS with trigger `observation`) and `goal`
(latched); publishes `subgoal` (a stamped vector carrying the stamp of the observation it was
planned from) and `subgoal/log_likelihood` (std_msgs/Float64, the policy's log-likelihood of that
subgoal), both RELIABLE. Observations are counted from the latest goal and a subgoal is planned on
every k with k % replan_every == 0 (the LOCKSTEP CONTRACT in README.md); `rate_hz` > 0 sets
replan_every from a rate instead (observations per plan = 1 / (rate_hz · the bundle's control
period), at least 1). In lockstep runs set `replan_every`, the parameter the controller shares, not
`rate_hz`, and `trigger: observation` (shared too).

Messages that cannot be used (wrong length, non-finite value, zero stamp, an observation not newer
than the previous one) are dropped and counted; no plan is published without a goal. In lockstep,
observations stamped before the latest goal are the previous episode's, still queued when a slow
planner gets the next goal (the controller answered them without a new subgoal): they are dropped
too, and like observations before any goal they are expected, not a warning.
"""
from __future__ import annotations

import sys
import time
from collections import Counter

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import QoSProfile
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64

from nfhiql_core.deploy.runtime import NonFiniteOutputError
from nfhiql_ros.diagnostics import OK, WARN, percentiles_ms, status_array
from nfhiql_ros.executors import run_node
from nfhiql_ros.contract import PlannerParams
from nfhiql_ros.params import declare_parameters, with_command_line_overrides
from nfhiql_ros.policy_common import ReplanSchedule, load_runtime, observation_qos, replan_every
from nfhiql_ros.ros_io import LATCHED_QOS, STATE_QOS, MessageError, vector_from_msg, vector_msg, vector_names

EXPECTED_DROPS = ("observation_before_goal", "observation_previous_goal")  # not a warning


def observations_per_plan(params: PlannerParams, every: int, control_period_s: float | None) -> int:
    """replan_every, or the observation count that rate_hz amounts to at the bundle's control period."""
    if params.rate_hz == 0:
        return every
    if not control_period_s:
        raise ValueError("rate_hz needs the bundle's control period, which this bundle does not have: "
                         "set replan_every instead")
    return max(1, round(1.0 / (params.rate_hz * control_period_s)))


class SubgoalPlanner(Node):
    """High-level policy node (see the module docstring)."""

    def __init__(self, **node_kwargs) -> None:  # node_kwargs: rclpy Node's (context, cli_args, ...)
        super().__init__("subgoal_planner", **with_command_line_overrides(node_kwargs))
        self.params = declare_parameters(self, PlannerParams)
        self.executor_name = self.params.executor
        self.runtime = load_runtime(self, self.params)
        meta = self.runtime.metadata
        self.every = observations_per_plan(self.params, replan_every(self.params, self.runtime),
                                           meta.control_period_s)
        self.schedule = ReplanSchedule(self.every)
        self.lockstep = self.params.trigger == "observation"
        self.subgoal_names = vector_names("subgoal", meta.subgoal_dim)
        self.goal: np.ndarray | None = None
        self.last_obs_stamp = 0
        self.plans = 0
        self.plan_s: list[float] = []
        self.dropped: Counter[str] = Counter()
        self.failures = 0
        # `goal` first: when a goal and the next observation are ready together, the goal is taken first.
        self.create_subscription(JointState, "goal", self.on_goal, LATCHED_QOS)
        self.create_subscription(JointState, "observation", self.on_observation, observation_qos(self.params))
        self.log_likelihood_pub = self.create_publisher(Float64, "subgoal/log_likelihood", STATE_QOS)
        self.subgoal_pub = self.create_publisher(JointState, "subgoal", STATE_QOS)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", QoSProfile(depth=10))
        self.create_timer(self.params.diagnostics_period_s, self.publish_diagnostics)
        self.get_logger().info(f"planning every {self.every} observations (trigger {self.params.trigger})")

    def on_goal(self, msg: JointState) -> None:
        try:
            self.goal, stamp = vector_from_msg(msg, self.runtime.metadata.goal_dim, "goal")
        except MessageError as exc:
            self.drop("goal", exc)
            return
        self.schedule.reset(stamp)

    def on_observation(self, msg: JointState) -> None:
        try:
            obs, stamp = vector_from_msg(msg, self.runtime.metadata.obs_dim, "observation")
        except MessageError as exc:
            self.drop("observation", exc)
            return
        if stamp <= self.last_obs_stamp:
            self.drop("observation", MessageError("observation: stamp not newer than the previous observation"))
            return
        self.last_obs_stamp = stamp
        if self.goal is None:
            self.dropped["observation_before_goal"] += 1
            return
        if self.lockstep and self.schedule.before_goal(stamp):
            self.dropped["observation_previous_goal"] += 1
            return
        replan, _ = self.schedule.observe(stamp)
        if replan:
            self.plan(obs, stamp)

    def plan(self, obs: np.ndarray, stamp: int) -> None:
        start = time.perf_counter()
        try:
            subgoal, log_prob = self.runtime.plan(obs, self.goal)
        except NonFiniteOutputError as exc:  # publish nothing: the controller's subgoal timeout stops safely
            self.failures += 1
            self.get_logger().error(str(exc), throttle_duration_sec=1.0)
            return
        # The log-likelihood first: a controller acting on the subgoal then already has its score.
        self.log_likelihood_pub.publish(Float64(data=float(log_prob)))
        self.subgoal_pub.publish(vector_msg(subgoal, self.subgoal_names, stamp))
        self.plans += 1
        self.plan_s.append(time.perf_counter() - start)

    def drop(self, topic: str, exc: MessageError) -> None:
        self.dropped[topic] += 1
        self.get_logger().warning(f"dropped a message: {exc}", throttle_duration_sec=1.0)

    def publish_diagnostics(self) -> None:
        p50, p99 = percentiles_ms(self.plan_s)
        self.plan_s = []
        dropped = sum(n for key, n in self.dropped.items() if key not in EXPECTED_DROPS)
        level = WARN if self.failures or dropped else OK
        values = {"plans": self.plans, "replan_every": self.every, "plan_ms_p50": p50, "plan_ms_p99": p99,
                  "dropped": dropped, **{f"dropped_{k}": n for k, n in sorted(self.dropped.items())},
                  "non_finite_plans": self.failures, "provider": self.runtime.providers[0],
                  "has_goal": self.goal is not None}
        message = "planning" if self.goal is not None else "waiting for a goal"
        self.diagnostics_pub.publish(status_array(self.get_clock().now().nanoseconds, self.get_fully_qualified_name(),
                                                  level, message, values, self.params.bundle))

    def on_shutdown(self) -> None:
        self.publish_diagnostics()
        self.get_logger().info(f"shutting down after {self.plans} plans ({sum(self.dropped.values())} messages "
                               f"dropped, {self.failures} non-finite plans)")


def main(args: list[str] | None = None) -> int:
    return run_node(SubgoalPlanner, args)


if __name__ == "__main__":
    sys.exit(main())
