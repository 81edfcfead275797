"""Message conventions shared by every nfhiql node: stamped vectors, QoS profiles, time.

Observations, goals and subgoals travel as `sensor_msgs/JointState`: the header carries the stamp
used for staleness checks, `name` labels each element and `position` holds the values. That keeps
them inspectable with stock tools (`ros2 topic echo`, rosbag2, plotjuggler) without a custom
message package. Commands go out RELIABLE (ros2_control and MoveIt Servo subscribe RELIABLE);
sensor streams are subscribed with sensor-data QoS, which accepts either reliability.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from builtin_interfaces.msg import Time
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import JointState

# Subscriptions to observation-like streams (matches RELIABLE and BEST_EFFORT publishers).
SENSOR_QOS = qos_profile_sensor_data
# Publishers of observation-like streams, as joint_state_broadcaster does.
STATE_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
# Lockstep observations (mujoco_sim's publisher and the policy nodes' subscriptions): none lost, in
# order, whatever the backlog. The backlog is bounded: the sim waits for each command, and the
# controller waits for the planner every replan_every observations.
LOCKSTEP_QOS = QoSProfile(history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE)
# Command publishers: ros2_control forward controllers and MoveIt Servo subscribe RELIABLE.
COMMAND_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
# Goals: latched so a node that starts late still receives the current goal.
LATCHED_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)


class MessageError(ValueError):
    """A received message cannot be used (wrong length, non-finite values, missing stamp)."""


def ns_to_stamp(ns: int) -> Time:
    """Nanoseconds → builtin_interfaces/Time."""
    return Time(sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000))


def stamp_to_ns(stamp: Time) -> int:
    """builtin_interfaces/Time → nanoseconds."""
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def vector_names(prefix: str, dim: int) -> list[str]:
    """Default element names: prefix_0 … prefix_{dim-1}."""
    return [f"{prefix}_{i}" for i in range(dim)]


def vector_msg(values: np.ndarray, names: Sequence[str], stamp_ns: int, frame_id: str = "") -> JointState:
    """A stamped, named vector as a JointState (values in `position`)."""
    msg = JointState()
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.header.frame_id = frame_id
    msg.name = list(names)
    msg.position = [float(v) for v in values]
    return msg


def vector_fields(msg: JointState) -> tuple[list[float], int, list[str]]:
    """(values, stamp_ns, names) of a stamped vector, unchecked (the control core checks them)."""
    return list(msg.position), stamp_to_ns(msg.header.stamp), list(msg.name)


def vector_from_msg(msg: JointState, dim: int, topic: str) -> tuple[np.ndarray, int]:
    """(values, stamp_ns) of a stamped vector; MessageError if it cannot be used as a `dim`-vector."""
    values = np.asarray(msg.position, dtype=np.float64)
    if values.shape != (dim,):
        raise MessageError(f"{topic}: expected {dim} values in position, got {values.size}")
    if not np.isfinite(values).all():
        raise MessageError(f"{topic}: non-finite value at index {int(np.flatnonzero(~np.isfinite(values))[0])}")
    stamp = stamp_to_ns(msg.header.stamp)
    if stamp == 0:
        raise MessageError(f"{topic}: header.stamp is zero (every vector message must be stamped)")
    return values, stamp
