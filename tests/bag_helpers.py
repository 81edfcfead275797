"""Real rosbag2 files for the bag2data tests, written with rosbags' Writer (mcap or sqlite3,
optionally zstd-compressed) from the same type store bag2data reads with."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import yaml
from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer

from nfhiql_core.bags.bag2data import typestore

SEC = 1_000_000_000
T0 = 1_700_000_000 * SEC  # stamps start here
LOG_DELAY_NS = 2_000  # log time = header stamp + this (the recorder receives a little later)


class BagWriter:
    """`with BagWriter(path, storage, compression) as bag: bag.joint_state(...)`; times are ns."""

    def __init__(self, path: Path, storage: str = "mcap", compression: str = "none"):
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self.writer = Writer(path, version=Writer.VERSION_LATEST, storage_plugin=plugin)
        if compression != "none":
            self.writer.set_compression(CompressionMode[compression.upper()], CompressionFormat.ZSTD)
        self.ts = typestore()
        self.types = self.ts.types
        self.connections: dict[str, object] = {}

    def __enter__(self) -> "BagWriter":
        self.writer.open()
        return self

    def __exit__(self, *exc) -> None:
        self.writer.close()

    def write(self, topic: str, msg, log_ns: int) -> None:
        msgtype = msg.__msgtype__
        if topic not in self.connections:
            self.connections[topic] = self.writer.add_connection(topic, msgtype, typestore=self.ts)
        self.writer.write(self.connections[topic], log_ns, self.ts.serialize_cdr(msg, msgtype))

    def header(self, t: int, frame_id: str = "base"):
        stamp = self.types["builtin_interfaces/msg/Time"](sec=t // SEC, nanosec=t % SEC)
        return self.types["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)

    def _log(self, t: int, log: int | None) -> int:
        return t + LOG_DELAY_NS if log is None else log

    def joint_state(self, topic: str, t: int, names: Sequence[str], position, velocity=(), effort=(),
                    log: int | None = None, frame_id: str = "base") -> None:
        msg = self.types["sensor_msgs/msg/JointState"](
            header=self.header(t, frame_id), name=list(names), position=np.asarray(position, np.float64),
            velocity=np.asarray(velocity, np.float64), effort=np.asarray(effort, np.float64))
        self.write(topic, msg, self._log(t, log))

    def multiarray(self, topic: str, log: int, data, f32: bool = False) -> None:
        cls = self.types[f"std_msgs/msg/Float{32 if f32 else 64}MultiArray"]
        layout = self.types["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0)
        self.write(topic, cls(layout=layout, data=np.asarray(data, np.float32 if f32 else np.float64)), log)

    def pose(self, topic: str, t: int, xyz, quat, transform: bool = False, log: int | None = None) -> None:
        T = self.types
        if transform:
            msg = T["geometry_msgs/msg/TransformStamped"](
                header=self.header(t), child_frame_id="cube", transform=T["geometry_msgs/msg/Transform"](
                    translation=T["geometry_msgs/msg/Vector3"](*map(float, xyz)),
                    rotation=T["geometry_msgs/msg/Quaternion"](*map(float, quat))))
        else:
            msg = T["geometry_msgs/msg/PoseStamped"](header=self.header(t), pose=T["geometry_msgs/msg/Pose"](
                position=T["geometry_msgs/msg/Point"](*map(float, xyz)),
                orientation=T["geometry_msgs/msg/Quaternion"](*map(float, quat))))
        self.write(topic, msg, self._log(t, log))

    def twist(self, topic: str, t: int, linear, angular, log: int | None = None) -> None:
        T = self.types
        vec = T["geometry_msgs/msg/Vector3"]
        msg = T["geometry_msgs/msg/TwistStamped"](header=self.header(t), twist=T["geometry_msgs/msg/Twist"](
            linear=vec(*map(float, linear)), angular=vec(*map(float, angular))))
        self.write(topic, msg, self._log(t, log))

    def trajectory(self, topic: str, t: int, names: Sequence[str], positions, log: int | None = None) -> None:
        T = self.types
        point = T["trajectory_msgs/msg/JointTrajectoryPoint"](
            positions=np.asarray(positions, np.float64), velocities=np.zeros(0), accelerations=np.zeros(0),
            effort=np.zeros(0), time_from_start=T["builtin_interfaces/msg/Duration"](sec=0, nanosec=100_000_000))
        msg = T["trajectory_msgs/msg/JointTrajectory"](header=self.header(t), joint_names=list(names), points=[point])
        self.write(topic, msg, self._log(t, log))

    def marker(self, topic: str, t: int, log: int | None = None) -> None:
        self.write(topic, self.header(t, "episode"), self._log(t, log))


def write_spec(path: Path, observation: list[dict], action: dict, **top) -> Path:
    """A spec file: rate 10 Hz unless `top` says otherwise."""
    path.write_text(yaml.safe_dump({"rate_hz": 10.0, **top, "observation": observation, "action": action},
                                   sort_keys=False))
    return path


def js_field(topic: str = "/js", names=("a", "b"), **extra) -> dict:
    return {"topic": topic, "type": "sensor_msgs/msg/JointState", "names": list(names), **extra}


def cmd_field(topic: str = "/cmd", size: int = 2, **extra) -> dict:
    return {"topic": topic, "type": "std_msgs/msg/Float64MultiArray", "size": size, **extra}
