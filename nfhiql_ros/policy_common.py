"""What the two policy nodes share: their common parameters, the runtime, the re-plan schedule.

The schedule is the LOCKSTEP CONTRACT (README) in code: observations are counted from the latest
goal (k = 0, 1, …) and the subgoal used for observation k is the one planned from observation
k − k % replan_every. The planner and the controller each run one, so they agree without talking.
The count is each observation's step index only if none is lost or carried over from the previous
episode: with trigger `observation` (lockstep) both nodes therefore subscribe `observation` with
LOCKSTEP_QOS (lossless, in order) and drop observations stamped before the latest goal.
"""
from __future__ import annotations

from typing import Sequence

from rclpy.node import Node
from rclpy.qos import QoSProfile

from nfhiql_core.deploy.runtime import PolicyRuntime
from nfhiql_ros.contract import PolicyParams
from nfhiql_ros.ros_io import LOCKSTEP_QOS, SENSOR_QOS

# Short provider names accepted in the `providers` parameter ("CUDA" = "CUDAExecutionProvider").
_PROVIDER_SUFFIX = "ExecutionProvider"


def observation_qos(params: PolicyParams) -> QoSProfile:
    """The `observation` subscription's QoS: lossless in lockstep, sensor QoS (any publisher) otherwise."""
    return LOCKSTEP_QOS if params.trigger == "observation" else SENSOR_QOS


def provider_names(providers: Sequence[str]) -> list[str]:
    """Full ONNX Runtime provider names ("CUDA" → "CUDAExecutionProvider")."""
    return [p if p.endswith(_PROVIDER_SUFFIX) else p + _PROVIDER_SUFFIX for p in providers]


def load_runtime(node: Node, params: PolicyParams) -> PolicyRuntime:
    """The bundle on the first available provider (z = 0: deterministic); logs what actually runs."""
    runtime = PolicyRuntime(params.bundle, provider_names(params.providers))
    meta = runtime.metadata
    node.get_logger().info(f"bundle {params.bundle} ({meta.policy}, obs {meta.obs_dim}, subgoal {meta.subgoal_dim}, "
                           f"action {meta.action_dim}) running on {', '.join(runtime.providers)}")
    return runtime


def replan_every(params: PolicyParams, runtime: PolicyRuntime) -> int:
    """The `replan_every` parameter, 0 resolved to the bundle's subgoal_steps."""
    return params.replan_every or runtime.metadata.subgoal_steps


class ReplanSchedule:
    """Counts observations since the latest goal; says which observation a subgoal is planned from."""

    def __init__(self, every: int):
        self.every = every
        self.goal_stamp: int | None = None
        self.count = 0
        self.plan_stamp: int | None = None

    def reset(self, goal_stamp_ns: int) -> None:
        """A new goal (episode) stamped `goal_stamp_ns`: the next observation is k = 0."""
        self.goal_stamp, self.count, self.plan_stamp = goal_stamp_ns, 0, None

    def before_goal(self, stamp_ns: int) -> bool:
        """Stamped before the latest goal: in lockstep, an observation of the previous episode."""
        return self.goal_stamp is not None and stamp_ns < self.goal_stamp

    def observe(self, stamp_ns: int) -> tuple[bool, int]:
        """Count the observation stamped `stamp_ns`: (is k % every == 0, stamp of the planning observation)."""
        replan = self.count % self.every == 0
        if replan:
            self.plan_stamp = stamp_ns
        self.count += 1
        return replan, self.plan_stamp
