"""The robot interface on the ROS side: subscriptions to a spec's observation topics, publishers of
its command topics, and the start-up check that the robot's topics are there with the right types.

The decisions are the core's (`control.assembly`, `control.commands`); this module only maps
message types to rclpy classes and fills command messages in.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
from builtin_interfaces.msg import Duration
from geometry_msgs.msg import PoseStamped, TransformStamped, TwistStamped
from rclpy.node import Node
from rclpy.qos import QoSProfile
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float32, Float32MultiArray, Float64, Float64MultiArray
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from nfhiql_core.control.commands import CommandEncoder, RawCommand
from nfhiql_core.interface.spec import InterfaceSpec
from nfhiql_ros.ros_io import COMMAND_QOS, ns_to_stamp

MESSAGE_CLASSES: dict[str, type] = {
    "sensor_msgs/msg/JointState": JointState, "trajectory_msgs/msg/JointTrajectory": JointTrajectory,
    "std_msgs/msg/Float32MultiArray": Float32MultiArray, "std_msgs/msg/Float64MultiArray": Float64MultiArray,
    "geometry_msgs/msg/PoseStamped": PoseStamped, "geometry_msgs/msg/TransformStamped": TransformStamped,
    "geometry_msgs/msg/TwistStamped": TwistStamped, "std_msgs/msg/Float64": Float64,
    "std_msgs/msg/Float32": Float32, "std_msgs/msg/Bool": Bool,
}
_TWIST = {"vx": ("linear", "x"), "vy": ("linear", "y"), "vz": ("linear", "z"),
          "wx": ("angular", "x"), "wy": ("angular", "y"), "wz": ("angular", "z")}


def observation_topics(spec: InterfaceSpec) -> dict[str, str]:
    """topic → message type of the spec's observation streams."""
    return {f.topic: f.type for f in spec.observation}


def command_topics(spec: InterfaceSpec) -> dict[str, str]:
    """topic → message type of the spec's command outputs."""
    return {f.topic: f.type for f in spec.action.fields}


def missing_topics(node: Node, inputs: dict[str, str], outputs: dict[str, str]) -> list[str]:
    """What is missing for the robot interface: an input topic nobody publishes, an output topic
    nobody subscribes to, or either with another type; one phrase each, empty when all is there."""
    problems = []
    for topic, msgtype, endpoints, role in (
            [(t, m, node.get_publishers_info_by_topic(t), "publisher") for t, m in inputs.items()]
            + [(t, m, node.get_subscriptions_info_by_topic(t), "subscriber") for t, m in outputs.items()]):
        others = [e for e in endpoints if e.node_name != node.get_name() or e.node_namespace != node.get_namespace()]
        if not others:
            problems.append(f"{topic} ({msgtype}): no {role}")
        elif any(e.topic_type != msgtype for e in others):
            found = sorted({e.topic_type for e in others if e.topic_type != msgtype})
            problems.append(f"{topic}: the robot has {', '.join(found)}, the spec says {msgtype}")
    return problems


def subscribe(node: Node, topics: dict[str, str], callback: Callable[[str, Any], None],
              qos: QoSProfile) -> list:
    """One subscription per topic, handing (topic, message) to `callback`."""
    return [node.create_subscription(MESSAGE_CLASSES[msgtype], topic, lambda msg, t=topic: callback(t, msg), qos)
            for topic, msgtype in topics.items()]


class InterfaceOutput:
    """The spec's command topics: `publish(action, stamp)` sends one message per topic, stamped (where
    the type has a header) with the observation the command answers."""

    def __init__(self, node: Node, spec: InterfaceSpec, period_s: float):
        self.encoder = CommandEncoder(spec)
        self.period_s = period_s
        self.publishers = {topic: node.create_publisher(MESSAGE_CLASSES[msgtype], topic, COMMAND_QOS)
                           for topic, msgtype in command_topics(spec).items()}

    def publish(self, action: np.ndarray, stamp: int) -> None:
        for command in self.encoder.encode(np.asarray(action, dtype=np.float64)):
            self.publishers[command.topic].publish(self._message(command, stamp))

    def _message(self, c: RawCommand, stamp: int) -> Any:
        values = [float(v) for v in c.values]
        if c.type in ("std_msgs/msg/Float64MultiArray", "std_msgs/msg/Float32MultiArray"):
            return MESSAGE_CLASSES[c.type](data=values)
        msg = MESSAGE_CLASSES[c.type]()
        msg.header.stamp, msg.header.frame_id = ns_to_stamp(stamp), c.frame_id
        if c.type == "geometry_msgs/msg/TwistStamped":
            for name, value in zip(c.names, values):
                part, axis = _TWIST[name]
                setattr(getattr(msg.twist, part), axis, value)
        elif c.type == "sensor_msgs/msg/JointState":
            msg.name = list(c.names)
            setattr(msg, c.array, values)
        else:  # JointTrajectory: one point, one control period ahead
            msg.joint_names = list(c.names)
            point = JointTrajectoryPoint()
            setattr(point, c.array, values)
            sec, nanosec = divmod(round(self.period_s * 1e9), 1_000_000_000)
            point.time_from_start = Duration(sec=sec, nanosec=nanosec)
            msg.points = [point]
        return msg
