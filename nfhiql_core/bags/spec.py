"""The conversion spec of `nfhiql bag2data`: which rosbag2 topics and message fields make up the
observation and action vectors, at which control rate, and how episodes are delimited.

A YAML file (see config/bags/) validated into frozen dataclasses; every error names the spec file
and the dotted key. Supported message types, and what selects values in each:

- sensor_msgs/msg/JointState: `field` position (default), velocity or effort; `names`: the joints,
  looked up by name (their order in a message is not guaranteed).
- trajectory_msgs/msg/JointTrajectory: the first point's positions (default), velocities,
  accelerations or effort; `names`: the joints.
- std_msgs/msg/Float32MultiArray, Float64MultiArray: `data`; `size` (its exact length), `indices`.
- geometry_msgs/msg/PoseStamped, TransformStamped: `names` among x y z qx qy qz qw (default all).
- geometry_msgs/msg/TwistStamped: `names` among vx vy vz wx wy wz (default all).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from nfhiql_core.config import apply_overrides, from_dict, load_yaml

JOINT_STATE = "sensor_msgs/msg/JointState"
JOINT_TRAJECTORY = "trajectory_msgs/msg/JointTrajectory"
FLOAT32_ARRAY = "std_msgs/msg/Float32MultiArray"
FLOAT64_ARRAY = "std_msgs/msg/Float64MultiArray"
POSE_STAMPED = "geometry_msgs/msg/PoseStamped"
TRANSFORM_STAMPED = "geometry_msgs/msg/TransformStamped"
TWIST_STAMPED = "geometry_msgs/msg/TwistStamped"

POSE_COMPONENTS = ("x", "y", "z", "qx", "qy", "qz", "qw")
QUATERNION = ("qx", "qy", "qz", "qw")
TWIST_COMPONENTS = ("vx", "vy", "vz", "wx", "wy", "wz")


@dataclass(frozen=True)
class MessageKind:
    """How values are selected from one supported message type."""

    arrays: tuple[str, ...] = ()  # selectable arrays, the first is the default
    components: tuple[str, ...] = ()  # selectable scalar components (poses, twists)
    by_joint_name: bool = False  # `names` are joint names, looked up in each message


KINDS: dict[str, MessageKind] = {
    JOINT_STATE: MessageKind(arrays=("position", "velocity", "effort"), by_joint_name=True),
    JOINT_TRAJECTORY: MessageKind(arrays=("positions", "velocities", "accelerations", "effort"), by_joint_name=True),
    FLOAT32_ARRAY: MessageKind(arrays=("data",)),
    FLOAT64_ARRAY: MessageKind(arrays=("data",)),
    POSE_STAMPED: MessageKind(components=POSE_COMPONENTS),
    TRANSFORM_STAMPED: MessageKind(components=POSE_COMPONENTS),
    TWIST_STAMPED: MessageKind(components=TWIST_COMPONENTS),
}
TIME_SOURCES = ("header", "log")
INTERPOLATIONS = ("zoh", "linear")


def canonical_msgtype(name: str) -> str:
    """'sensor_msgs/JointState' → 'sensor_msgs/msg/JointState' (full names pass through)."""
    parts = name.split("/")
    return f"{parts[0]}/msg/{parts[1]}" if len(parts) == 2 else name


@dataclass(frozen=True)
class FieldSpec:
    """Some values of one topic's messages: one piece of the observation or action vector.

    Values are `raw * scale + offset` (scalars or one number per value).
    """

    topic: str
    type: str
    field: str = ""  # the array to read (see the module table); '' = the type's default
    names: tuple[str, ...] = ()  # joint names, or components (none given = all components)
    size: int = 0  # MultiArrays: the exact number of values in `data`
    indices: tuple[int, ...] = ()  # MultiArrays: which of them (default: all)
    scale: float | tuple[float, ...] = 1.0
    offset: float | tuple[float, ...] = 0.0
    label: str = ""  # name in reports and in action.delta_of; default '<topic>.<field>'
    # At an episode's end, this topic's last value still counts for rows up to this long after it
    # (so a slow stream, e.g. a 10 Hz object pose, does not cut the last rows of a 50 Hz episode);
    # 0 = the topic's median sample interval in that episode.
    max_age_s: float = 0.0

    def __post_init__(self) -> None:
        set_ = _setter(self)
        set_("type", canonical_msgtype(self.type))
        if not self.topic.startswith("/"):
            set_("topic", f"/{self.topic}")
        kind = KINDS.get(self.type)
        if kind is None:
            raise ValueError(f"type: unsupported message type {self.type!r} (supported: {', '.join(KINDS)})")
        if kind.arrays:
            set_("field", self.field or kind.arrays[0])
            if self.field not in kind.arrays:
                raise ValueError(f"field: {self.field!r} is not an array of {self.type} (choose from {kind.arrays})")
        elif self.field:
            raise ValueError(f"field: {self.type} has no arrays; select components with names")
        self._check_selection(kind)
        set_("label", self.label or (f"{self.topic}.{self.field}" if self.field else self.topic))
        if not self.max_age_s >= 0:
            raise ValueError(f"max_age_s: must be >= 0 (got {self.max_age_s})")
        for key in ("scale", "offset"):
            value = getattr(self, key)
            if isinstance(value, tuple) and len(value) != self.dim:
                raise ValueError(f"{key}: {len(value)} numbers for {self.dim} values")

    def _check_selection(self, kind: MessageKind) -> None:
        if kind.by_joint_name and not self.names:
            raise ValueError(f"names: required for {self.type} (the joint names to read, in the order wanted)")
        if kind.components:
            set_ = _setter(self)
            set_("names", self.names or kind.components)
            unknown = [n for n in self.names if n not in kind.components]
            if unknown:
                raise ValueError(f"names: {unknown[0]!r} is not a component of {self.type} "
                                 f"(choose from {' '.join(kind.components)})")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"names: duplicates in {list(self.names)}")
        is_array = self.type in (FLOAT32_ARRAY, FLOAT64_ARRAY)
        if is_array and self.size < 1:
            raise ValueError(f"size: required for {self.type} (the exact number of values in data)")
        if not is_array and (self.size or self.indices):
            raise ValueError(f"size/indices: only for MultiArray types, not {self.type}")
        if self.indices and not all(0 <= i < self.size for i in self.indices):
            raise ValueError(f"indices: must be within 0..{self.size - 1} (size {self.size})")
        if is_array and self.names:
            raise ValueError("names: MultiArray values are selected with indices, not names")

    @property
    def dim(self) -> int:
        """Number of values this field contributes."""
        if self.type in (FLOAT32_ARRAY, FLOAT64_ARRAY):
            return len(self.indices) if self.indices else self.size
        return len(self.names)

    @property
    def element_names(self) -> list[str]:
        """One name per value: '<label>.<joint or component>' or '<label>[i]'."""
        if self.type in (FLOAT32_ARRAY, FLOAT64_ARRAY):
            return [f"{self.label}[{i}]" for i in (self.indices or range(self.size))]
        return [f"{self.label}.{name}" for name in self.names]

    @property
    def has_quaternion(self) -> bool:
        """All four quaternion components of a pose are selected (interpolated as a rotation)."""
        return self.type in (POSE_STAMPED, TRANSFORM_STAMPED) and set(QUATERNION) <= set(self.names)

    def affine(self) -> tuple[np.ndarray, np.ndarray]:
        """(scale, offset) as arrays of length `dim`."""
        return (np.broadcast_to(np.asarray(self.scale, dtype=np.float64), (self.dim,)),
                np.broadcast_to(np.asarray(self.offset, dtype=np.float64), (self.dim,)))


def _setter(obj: object):
    """A setter for normalising fields of a frozen dataclass in its __post_init__."""
    return lambda name, value: object.__setattr__(obj, name, value)


@dataclass(frozen=True)
class EpisodeSpec:
    """How the recording is cut into episodes."""

    marker_topic: str = ""  # every message on this topic starts a new episode ('' = no markers)
    max_gap_s: float = 1.0  # a silence longer than this on any mapped topic ends the episode

    def __post_init__(self) -> None:
        if self.marker_topic and not self.marker_topic.startswith("/"):
            _setter(self)("marker_topic", f"/{self.marker_topic}")
        if not self.max_gap_s > 0:
            raise ValueError(f"max_gap_s: must be > 0 (got {self.max_gap_s})")


@dataclass(frozen=True)
class ActionSpec:
    """Either recorded commands (`fields`) or the next-state delta of observation fields."""

    fields: tuple[FieldSpec, ...] = ()
    delta_of: tuple[str, ...] = ()  # observation labels: action = (next row - row) * delta_scale
    delta_scale: float = 1.0

    def __post_init__(self) -> None:
        if bool(self.fields) == bool(self.delta_of):
            raise ValueError("give exactly one of fields (command topics) or delta_of (observation labels)")

    @property
    def dim(self) -> int:
        return sum(f.dim for f in self.fields)


@dataclass(frozen=True)
class BagSpec:
    """A validated conversion spec."""

    rate_hz: float  # the policy control rate: one dataset row every 1/rate_hz seconds
    observation: tuple[FieldSpec, ...]
    action: ActionSpec
    time_source: str = "header"  # header: header.stamp (log time for messages without one) | log
    interpolation: str = "zoh"  # zoh: latest value | linear: between the samples around each row
    tolerance_s: float = 0.0  # zoh: a sample stamped up to this long after a row still counts for it
    episodes: EpisodeSpec = field(default_factory=EpisodeSpec)

    def __post_init__(self) -> None:
        if not self.rate_hz > 0:
            raise ValueError(f"rate_hz: must be > 0 (got {self.rate_hz})")
        if self.time_source not in TIME_SOURCES:
            raise ValueError(f"time_source: {self.time_source!r} is not one of {TIME_SOURCES}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation: {self.interpolation!r} is not one of {INTERPOLATIONS}")
        if not 0 <= self.tolerance_s < 1.0 / self.rate_hz:
            raise ValueError(f"tolerance_s: must be in [0, 1/rate_hz) (got {self.tolerance_s})")
        if self.episodes.max_gap_s <= 1.0 / self.rate_hz:
            raise ValueError(f"episodes.max_gap_s: must be longer than a control period (1/rate_hz = "
                             f"{1.0 / self.rate_hz:g} s)")
        if not self.observation:
            raise ValueError("observation: at least one field is needed")
        labels = [f.label for f in self.observation + self.action.fields]
        duplicated = sorted({x for x in labels if labels.count(x) > 1})
        if duplicated:
            raise ValueError(f"label {duplicated[0]!r} used twice (set label: on one of them)")
        obs_labels = [f.label for f in self.observation]
        unknown = [x for x in self.action.delta_of if x not in obs_labels]
        if unknown:
            raise ValueError(f"action.delta_of: {unknown[0]!r} is not an observation label "
                             f"(labels: {', '.join(obs_labels)})")
        types: dict[str, str] = {}
        for f in self.fields:
            if types.setdefault(f.topic, f.type) != f.type:
                raise ValueError(f"topic {f.topic} is given two types ({types[f.topic]}, {f.type})")
        if self.episodes.marker_topic in types:
            raise ValueError(f"episodes.marker_topic: {self.episodes.marker_topic} is also a data topic")

    @property
    def fields(self) -> tuple[FieldSpec, ...]:
        """Observation fields, then action fields."""
        return self.observation + self.action.fields

    @property
    def topics(self) -> list[str]:
        """Data topics in first-use order."""
        return list(dict.fromkeys(f.topic for f in self.fields))

    @property
    def observation_names(self) -> list[str]:
        return [n for f in self.observation for n in f.element_names]

    @property
    def action_names(self) -> list[str]:
        if self.action.fields:
            return [n for f in self.action.fields for n in f.element_names]
        by_label = {f.label: f for f in self.observation}
        return [f"delta({n})" for label in self.action.delta_of for n in by_label[label].element_names]

    @property
    def period_ns(self) -> float:
        return 1e9 / self.rate_hz


def load_spec(path: str | Path, overrides: Sequence[str] = ()) -> BagSpec:
    """Read and validate a spec file; `key.sub=value` overrides apply first."""
    return from_dict(BagSpec, apply_overrides(load_yaml(path), overrides), str(path))
