"""What the two policy nodes share: loading the runtime, the observation QoS, the re-plan interval."""
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
