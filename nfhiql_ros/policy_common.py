"""What the two policy nodes share: loading the runtime, the observation QoS, the re-plan interval, the
robot interface and its topic check at configure."""
from __future__ import annotations

import time
from typing import Sequence

from rclpy.node import Node
from rclpy.qos import QoSProfile

from nfhiql_core.deploy.bundle import BundleError, check_interface
from nfhiql_core.deploy.runtime import PolicyRuntime
from nfhiql_core.interface.spec import InterfaceSpec, load_spec
from nfhiql_ros.contract import PolicyParams
from nfhiql_ros.managed import Refused
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


def wait_for_topics(node: Node, inputs: dict[str, str], outputs: dict[str, str], wait_s: float) -> None:
    """Configure: wait up to `wait_s` for the robot's topics (publishers of `inputs`, subscribers of
    `outputs`, with their types); `Refused` naming every one still missing."""
    deadline = time.monotonic() + wait_s
    while True:
        problems = missing_topics(node, inputs, outputs)
        if not problems:
            break
        if time.monotonic() >= deadline:
            raise Refused("refusing to run: robot interface topics missing: " + "; ".join(problems))
        time.sleep(TOPIC_POLL_S)  # the graph is updated by discovery, not by spinning
    node.get_logger().info(f"robot interface: {len(inputs)} input and {len(outputs)} output "
                           "topic(s) present with their types")
