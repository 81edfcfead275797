"""MuJoCo as the hardware: what an OGBench env's robot and tracker would publish, and how its command
interfaces move it. Shared by mujoco_sim's robot mode (which turns readings into ROS messages) and
`nfhiql eval --interface` (which runs the same mapping in-process).

Readings are plain values (no ROS types): joint states by name, poses as (x y z, qx qy qz qw) in
the world frame, scalars. Commands are the robot's: a twist (vx vy vz wx wy wz, world frame) and,
for the arm, the gripper driver joint's velocity (rad/s); `env_action` converts them back to the
env's normalised action the way the robot's controllers would execute them over one control step.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Callable, NamedTuple

import numpy as np

from nfhiql_core.errors import ConfigError


class JointTable(NamedTuple):
    names: list[str]
    qpos: np.ndarray  # qpos address of each joint
    qvel: np.ndarray  # dof address of each joint


def joint_table(model, prefix: str) -> JointTable:
    """The model's hinge and slide joints (free and ball joints have no scalar position)."""
    import mujoco

    scalar = {int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE)}
    keep = [j for j in range(model.njnt) if int(model.jnt_type[j]) in scalar]
    names = [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_JOINT, j) or f"joint_{j}" for j in keep]
    names = [n[len(prefix):] if prefix and n.startswith(prefix) else n for n in names]
    return JointTable(names, model.jnt_qposadr[keep].copy(), model.jnt_dofadr[keep].copy())


@dataclass
class Readings:
    """One instant of the robot's sensors."""

    joint_names: list[str]
    position: np.ndarray
    velocity: np.ndarray
    poses: dict[str, np.ndarray] = field(default_factory=dict)  # role (tcp, object) → x y z qx qy qz qw
    scalars: dict[str, float] = field(default_factory=dict)  # role (contact) → value


@dataclass(frozen=True)
class RobotTopics:
    """Where the hardware publishes and listens (config/robots/ specs map these to the policy)."""

    joint_states: str = "/joint_states"
    tcp_pose: str = "/tcp_pose_broadcaster/pose"  # ur_robot_driver's tcp_pose_broadcaster
    object_pose: str = "/cube/pose"  # the tracker
    contact: str = "/gripper/contact"
    twist: str = "/servo_node/delta_twist_cmds"  # MoveIt Servo's input
    gripper: str = "/gripper_controller/joint_trajectory"  # the gripper's driver joint, velocity trajectories


POINT_TOPICS = RobotTopics(twist="/cmd_vel")


def _xyzw(wxyz: np.ndarray) -> np.ndarray:
    return np.array([wxyz[1], wxyz[2], wxyz[3], wxyz[0]])


ARM_JOINT_PREFIX = "ur5e/"  # MuJoCo's joint names carry it; a UR driver's joint_states do not
GRIPPER_JOINT = "robotiq/right_driver_joint"  # OGBench's gripper opening is this joint's position / 0.8 rad
GRIPPER_OPEN_RAD = 0.8


class RobotModel:
    """The robot of one OGBench env: `family` arm (cube), point (point maze) or legged (ant maze: joint
    states only; it takes the action vector, there is no command interface to model)."""

    def __init__(self, env):
        self.env = env
        self.u = u = env.unwrapped
        model = u._model if hasattr(u, "_model") else u.model
        self.model = model
        self.joints = joint_table(model, ARM_JOINT_PREFIX if hasattr(u, "_pinch_site_id") else "")
        self.dt = float(u.control_timestep() if callable(getattr(u, "control_timestep", None)) else u.dt)
        if hasattr(u, "_pinch_site_id"):
            self.family, self.topics = "arm", RobotTopics()
            self.max_step = np.asarray(u.action_high, dtype=np.float64)  # |a| = 1 ↔ this change per step
        elif hasattr(u, "get_xy") and env.action_space.shape == (2,):
            self.family, self.topics = "point", POINT_TOPICS
        elif hasattr(u, "get_xy") and self.joints.names:
            self.family, self.topics = "legged", RobotTopics()
        else:
            raise ConfigError(f"{getattr(env.spec, 'id', env)}: no robot model (arms of cube envs and point "
                              "mazes have one, ant mazes joint states)")

    def readings(self) -> Readings:
        """The robot's sensors now (after the env's last step)."""
        data = self.u._data if self.family == "arm" else self.u.data
        out = Readings(list(self.joints.names), data.qpos[self.joints.qpos].copy(),
                       data.qvel[self.joints.qvel].copy())
        if self.family == "arm":
            import mujoco

            site = self.u._pinch_site_id
            quat = np.empty(4)
            mujoco.mju_mat2Quat(quat, data.site_xmat[site])
            out.poses["tcp"] = np.r_[data.site_xpos[site], _xyzw(quat)]
            info = self.u.compute_ob_info()
            out.scalars["contact"] = float(info["proprio/gripper_contact"][0])
            if "privileged/block_0_pos" in info:
                out.poses["object"] = np.r_[info["privileged/block_0_pos"], _xyzw(info["privileged/block_0_quat"])]
        return out

    def env_action(self, twist: np.ndarray, gripper_speed: float = 0.0) -> np.ndarray:
        """The normalised env action the robot executes over one control step under these commands.

        Arm: tcp displacement = (vx, vy, vz) · dt, yaw change = wz · dt, gripper opening change =
        joint speed · dt / 0.8 rad, each over the env's largest change per step (wx, wy: the effector
        stays pointing down, as OGBench's arm does). Point: (vx, vy) is the command itself.
        """
        if self.family == "point":
            return np.array([twist[0], twist[1]])
        if self.family == "legged":
            raise ConfigError("a legged robot takes the action vector (vector interface): no twist command")
        change = np.array([twist[0], twist[1], twist[2], twist[5], gripper_speed / GRIPPER_OPEN_RAD]) * self.dt
        return change / self.max_step


def fill_messages(readings: Readings, topics: RobotTopics, stamp_ns: int, new: Callable[[str], Any],
                  frame_id: str = "world") -> dict[str, Any]:
    """The robot's messages for `readings`, all stamped `stamp_ns`: `new(msgtype)` makes an empty message
    (rclpy's classes in the sim; `plain_message` in-process), filled here field by field."""
    def stamped(msgtype: str) -> Any:
        msg = new(msgtype)
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
        msg.header.frame_id = frame_id
        return msg

    out = {}
    joints = stamped("sensor_msgs/msg/JointState")
    joints.name = list(readings.joint_names)
    joints.position = readings.position.tolist()
    joints.velocity = readings.velocity.tolist()
    out[topics.joint_states] = joints
    for role, topic in (("tcp", topics.tcp_pose), ("object", topics.object_pose)):
        if role in readings.poses:
            pose = stamped("geometry_msgs/msg/PoseStamped")
            x, y, z, qx, qy, qz, qw = readings.poses[role].tolist()
            p, q = pose.pose.position, pose.pose.orientation
            p.x, p.y, p.z, q.x, q.y, q.z, q.w = x, y, z, qx, qy, qz, qw
            out[topic] = pose
    if "contact" in readings.scalars:
        contact = new("std_msgs/msg/Float64")
        contact.data = readings.scalars["contact"]
        out[topics.contact] = contact
    return out


def plain_message(msgtype: str) -> SimpleNamespace:
    """An empty message with ROS's attribute layout, for the in-process interface path."""
    header = SimpleNamespace(stamp=SimpleNamespace(sec=0, nanosec=0), frame_id="")
    if msgtype == "sensor_msgs/msg/JointState":
        return SimpleNamespace(header=header, name=[], position=[], velocity=[], effort=[])
    if msgtype == "geometry_msgs/msg/PoseStamped":
        xyz = SimpleNamespace(x=0.0, y=0.0, z=0.0)
        return SimpleNamespace(header=header, pose=SimpleNamespace(position=xyz, orientation=SimpleNamespace(
            x=0.0, y=0.0, z=0.0, w=1.0)))
    if msgtype == "std_msgs/msg/Float64":
        return SimpleNamespace(data=0.0)
    raise ValueError(f"plain_message: no layout for {msgtype}")
