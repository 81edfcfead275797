"""What the two policy nodes share: loading the runtime, the observation QoS, the re-plan interval, the
robot interface and its start-up topic check."""
from __future__ import annotations

import time
from typing import Callable, Sequence

from rclpy.node import Node
from rclpy.qos import QoSProfile

from nfhiql_core.deploy.bundle import BundleError, check_interface
from nfhiql_core.deploy.runtime import PolicyRuntime
from nfhiql_core.interface.spec import InterfaceSpec, load_spec
from nfhiql_ros.contract import PolicyParams
from nfhiql_ros.robot_io import missing_topics
from nfhiql_ros.ros_io import LOCKSTEP_QOS, SENSOR_QOS

TOPIC_POLL_S = 0.1  # start-up topic check interval
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


def resolve_interface(params: PolicyParams, runtime: PolicyRuntime) -> InterfaceSpec | None:
    """The robot interface to run through: None (vector contract), the bundle's, or a spec file that
    fits the bundle (same names and rate)."""
    meta = runtime.metadata
    if not params.interface:
        return None
    if params.interface == "bundle":
        spec = meta.interface_spec()
        if spec is None:
            raise BundleError(f"{params.bundle}: interface 'bundle': the bundle carries no robot interface "
                              "(nfhiql bundle interface BUNDLE SPEC attaches one)")
        return spec
    spec = load_spec(params.interface)

    def fail(message: str) -> None:
        raise BundleError(f"{params.interface} for {params.bundle}: {message}")

    check_interface(meta, spec, fail)
    return spec


class TopicCheck:
    """Start-up: wait up to `topic_wait_s` for the robot's topics, then go on or refuse with one line."""

    def __init__(self, node: Node, inputs: dict[str, str], outputs: dict[str, str], wait_s: float,
                 on_ready: Callable[[], None]):
        self.node, self.inputs, self.outputs, self.on_ready = node, inputs, outputs, on_ready
        self.deadline = time.monotonic() + wait_s
        self.timer = node.create_timer(TOPIC_POLL_S, self._poll)
        self.refused = ""

    def _poll(self) -> None:
        problems = missing_topics(self.node, self.inputs, self.outputs)
        if problems and time.monotonic() < self.deadline:
            return
        self.timer.cancel()
        self.node.destroy_timer(self.timer)
        if problems:
            self.refused = "robot interface topics missing: " + "; ".join(problems)
            self.node.get_logger().error(f"refusing to run: {self.refused}")
            return
        self.node.get_logger().info(f"robot interface: {len(self.inputs)} input and {len(self.outputs)} output "
                                    "topic(s) present with their types")
        self.on_ready()


class TopicGated:
    """A policy node whose run ends early, with exit status 1, when its `topic_check` refused."""

    topic_check: TopicCheck | None

    @property
    def done(self) -> bool:
        return self.topic_check is not None and bool(self.topic_check.refused)

    @property
    def exit_status(self) -> int:
        return 1 if self.done else 0
