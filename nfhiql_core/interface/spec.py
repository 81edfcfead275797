"""The robot interface spec: which topics and message fields make up the observation, which command
topics carry the action, at which control rate, and how recordings are cut into episodes. One file
serves `nfhiql bag2data` (recordings → training data) and the policy nodes (topics → policy →
commands): see config/robots/ and config/bags/.

A YAML file validated into frozen dataclasses; every error names the spec file and the dotted key.
Supported message types, and what selects values in each:

- sensor_msgs/msg/JointState: `field` position (default), velocity or effort; `names`: the joints,
  looked up by name (their order in a message is not guaranteed).
- trajectory_msgs/msg/JointTrajectory: the first point's positions (default), velocities,
  accelerations or effort; `names`: the joints.
- std_msgs/msg/Float32MultiArray, Float64MultiArray: `data`; `size` (its exact length), `indices`.
- geometry_msgs/msg/PoseStamped, TransformStamped: `names` among x y z qx qy qz qw (default all).
- geometry_msgs/msg/TwistStamped: `names` among vx vy vz wx wy wz (default all).
- std_msgs/msg/Float64, Float32, Bool: the scalar `data` (Bool: 0 or 1).

An observation field's values are `features(raw)`: an optional `derive` (a pose quaternion → yaw,
or → cos/sin of yaw as OGBench's cube observation has), then `(raw - center) * scale + offset`,
then an optional `clip`. An action field maps a command topic's raw values to action components the same
affine way (bags: raw → action; live: action → raw, its inverse), with per-value `limit`s on the
raw command and a `frame_id` for commands with a header.
"""
from __future__ import annotations

import math
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
FLOAT64 = "std_msgs/msg/Float64"
FLOAT32 = "std_msgs/msg/Float32"
BOOL = "std_msgs/msg/Bool"

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
    FLOAT64: MessageKind(components=("data",)),
    FLOAT32: MessageKind(components=("data",)),
    BOOL: MessageKind(components=("data",)),
}
ARRAY_TYPES = (FLOAT32_ARRAY, FLOAT64_ARRAY)
COMMAND_TYPES = (TWIST_STAMPED, FLOAT64_ARRAY, JOINT_TRAJECTORY, JOINT_STATE)  # what the action can be sent as
DERIVATIONS = {"yaw": ("yaw",), "yaw_cos_sin": ("cos_yaw", "sin_yaw")}  # of a pose's quaternion
TIME_SOURCES = ("header", "log")
GOAL_FILLS = ("current", "reference")
INTERPOLATIONS = ("zoh", "linear")


def canonical_msgtype(name: str) -> str:
    """'sensor_msgs/JointState' → 'sensor_msgs/msg/JointState' (full names pass through)."""
    parts = name.split("/")
    return f"{parts[0]}/msg/{parts[1]}" if len(parts) == 2 else name


@dataclass(frozen=True)
class FieldSpec:
    """Some values of one topic's messages: one piece of the observation or action vector."""

    topic: str
    type: str
    field: str = ""  # the array to read (see the module table); '' = the type's default
    names: tuple[str, ...] = ()  # joint names, or components (none given = all components)
    size: int = 0  # MultiArrays: the exact number of values in `data`
    indices: tuple[int, ...] = ()  # MultiArrays: which of them (default: all)
    derive: str = ""  # observation: '' (the values) | yaw | yaw_cos_sin (of the selected qx qy qz qw)
    center: float | tuple[float, ...] = 0.0  # value = (raw (or derived) - center) * scale + offset
    scale: float | tuple[float, ...] = 1.0
    offset: float | tuple[float, ...] = 0.0
    clip: tuple[float, ...] = ()  # observation: (low, high) applied last; () = none
    label: str = ""  # name in reports, in action.delta_of and goal_fields; default '<topic>.<field>'
    element_names: tuple[str, ...] = ()  # the values' names in the vector (bundles, topics); default '<label>.<name>'
    rate_hz: float = 0.0  # the topic's expected publishing rate (0 = not declared)
    # How old the topic's last value may be and still count: live, older means the stream is stale
    # (0 = 1.5 periods of rate_hz); in a recording's last rows, 0 = the median sample interval
    # (so a slow stream, e.g. a 10 Hz object pose, does not cut the last rows of a 50 Hz episode).
    max_age_s: float = 0.0
    # zoh: this topic's own tolerance_s (0 = the spec's). A topic without a header is stamped with its log
    # (receive) time, which trails the instant it reports by the transport's latency: give it a longer one.
    tolerance_s: float = 0.0
    # observation: the safety supervisor's limits on this field's raw values, [low, high] (numbers or one
    # per value, e.g. the tcp position in m); outside is a safe stop. [] = none
    workspace: tuple[float | tuple[float, ...], ...] = ()
    limit: float | tuple[float, ...] = 0.0  # action: the largest |raw command| sent (0 = no limit)
    frame_id: str = ""  # action: header.frame_id of commands with a header (e.g. Servo's planning frame)

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
        if self.derive and self.derive not in DERIVATIONS:
            raise ValueError(f"derive: {self.derive!r} is not one of {', '.join(DERIVATIONS)}")
        if self.derive and not (self.has_quaternion and len(self.names) == 4):
            raise ValueError(f"derive: {self.derive} needs names: [qx, qy, qz, qw] of a pose")
        if self.clip and not (len(self.clip) == 2 and self.clip[0] <= self.clip[1]):
            raise ValueError(f"clip: expected [low, high] with low <= high (got {list(self.clip)})")
        for key in ("rate_hz", "max_age_s", "tolerance_s"):
            if not getattr(self, key) >= 0:
                raise ValueError(f"{key}: must be >= 0 (got {getattr(self, key)})")
        if self.workspace:
            if len(self.workspace) != 2 or self.derive:
                raise ValueError("workspace: [low, high] (numbers or one per value) on a field without derive")
            low, high = (np.broadcast_to(np.asarray(b, dtype=np.float64), (self.dim,)) for b in self.workspace)
            if not (np.isfinite(low).all() and np.isfinite(high).all() and (low <= high).all()):
                raise ValueError(f"workspace: need finite low <= high (got {list(self.workspace)})")
        if self.element_names and len(self.element_names) != self.dim:
            raise ValueError(f"element_names: {len(self.element_names)} names for {self.dim} values")
        for key in ("center", "scale", "offset", "limit"):
            value = getattr(self, key)
            if isinstance(value, tuple) and len(value) != self.dim:
                raise ValueError(f"{key}: {len(value)} numbers for {self.dim} values")
        limit = np.asarray(self.limit, dtype=np.float64)
        if not np.isfinite(np.r_[self.affine()[0], self.affine()[1], self._center(), limit.ravel()]).all() \
                or (limit < 0).any():
            raise ValueError("center/scale/offset/limit: must be finite (and limit >= 0)")

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
        is_array = self.type in ARRAY_TYPES
        if is_array and self.size < 1:
            raise ValueError(f"size: required for {self.type} (the exact number of values in data)")
        if not is_array and (self.size or self.indices):
            raise ValueError(f"size/indices: only for MultiArray types, not {self.type}")
        if self.indices and not all(0 <= i < self.size for i in self.indices):
            raise ValueError(f"indices: must be within 0..{self.size - 1} (size {self.size})")
        if is_array and self.names:
            raise ValueError("names: MultiArray values are selected with indices, not names")

    @property
    def raw_dim(self) -> int:
        """Number of values read from each message."""
        if self.type in ARRAY_TYPES:
            return len(self.indices) if self.indices else self.size
        return len(self.names)

    @property
    def dim(self) -> int:
        """Number of values this field contributes to the vector."""
        return len(DERIVATIONS[self.derive]) if self.derive else self.raw_dim

    @property
    def value_names(self) -> list[str]:
        """One name per value: `element_names`, or '<label>.<joint, component or derived>' or '<label>[i]'."""
        if self.element_names:
            return list(self.element_names)
        if self.derive:
            return [f"{self.label}.{name}" for name in DERIVATIONS[self.derive]]
        if self.type in ARRAY_TYPES:
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

    def _center(self) -> np.ndarray:
        return np.broadcast_to(np.asarray(self.center, dtype=np.float64), (self.dim,))

    def limits(self) -> np.ndarray:
        """The largest |raw command| per value (inf where unlimited)."""
        limit = np.broadcast_to(np.asarray(self.limit, dtype=np.float64), (self.dim,))
        return np.where(limit == 0, np.inf, limit)

    def features(self, raw: np.ndarray) -> np.ndarray:
        """Raw values (rows × raw_dim) → this field's part of the vector (rows × dim)."""
        return FeatureMap([self])(raw)

    def workspace_limits(self) -> dict[str, tuple[float, float]]:
        """This field's workspace in the observation's units: {element name: (low, high)}."""
        if not self.workspace:
            return {}
        raw = np.stack([np.broadcast_to(np.asarray(b, dtype=np.float64), (self.dim,)) for b in self.workspace])
        a, b = np.sort(self.features(raw), axis=0)  # features is monotone per value (affine, clip)
        return {name: (float(lo), float(hi)) for name, lo, hi in zip(self.value_names, a, b)}

    def raw_values(self, values: np.ndarray) -> np.ndarray:
        """This field's values → its raw message values (the inverse affine map; not for derived fields)."""
        scale, offset = self.affine()
        return (values - offset) / scale + self._center()

    def raw_command(self, action: np.ndarray) -> np.ndarray:
        """Action components → the raw command values (the inverse affine map), within `limit`."""
        limit = self.limits()
        return np.clip(self.raw_values(action), -limit, limit)


class FeatureMap:
    """Several fields' `features` at once: their concatenated raw values (rows × Σ raw_dim) → their
    concatenated values (rows × Σ dim), in a fixed number of array operations however many fields
    there are (the live assembler calls it once per message, bag2data once per block of rows)."""

    def __init__(self, fields: Sequence[FieldSpec]):
        raw_at = np.cumsum([0] + [f.raw_dim for f in fields])
        out_at = np.cumsum([0] + [f.dim for f in fields])
        self.dim = int(out_at[-1])
        plain_in, plain_out, self.derived = [], [], []
        for f, r, o in zip(fields, raw_at, out_at):
            if f.derive:
                quaternion = [int(r) + f.names.index(c) for c in QUATERNION]
                self.derived.append((quaternion, f.derive, slice(int(o), int(o) + f.dim)))
            else:
                plain_in += range(int(r), int(r) + f.raw_dim)
                plain_out += range(int(o), int(o) + f.dim)
        self.plain_in, self.plain_out = np.array(plain_in, dtype=np.intp), np.array(plain_out, dtype=np.intp)
        self.center = np.concatenate([f._center() for f in fields])
        self.scale = np.concatenate([f.affine()[0] for f in fields])
        self.offset = np.concatenate([f.affine()[1] for f in fields])
        self.low = np.concatenate([np.full(f.dim, f.clip[0] if f.clip else -np.inf) for f in fields])
        self.high = np.concatenate([np.full(f.dim, f.clip[1] if f.clip else np.inf) for f in fields])

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        out = np.empty((raw.shape[0], self.dim))
        out[:, self.plain_out] = raw[:, self.plain_in]
        for quaternion, derive, at in self.derived:
            yaw = _yaw(*raw[:, quaternion].T, np.arctan2)
            out[:, at] = yaw[:, None] if derive == "yaw" else np.column_stack([np.cos(yaw), np.sin(yaw)])
        return self._affine(out)

    def row(self, raw: np.ndarray) -> np.ndarray:
        """One message's raw values (1-D) → its values: `__call__` with scalar math for the derived
        features, so a live message costs a few microseconds."""
        out = np.empty(self.dim)
        out[self.plain_out] = raw[self.plain_in]
        for quaternion, derive, at in self.derived:
            yaw = _yaw(*raw[quaternion].tolist(), math.atan2)
            out[at] = (yaw,) if derive == "yaw" else (math.cos(yaw), math.sin(yaw))
        return self._affine(out)

    def _affine(self, values: np.ndarray) -> np.ndarray:
        return np.clip((values - self.center) * self.scale + self.offset, self.low, self.high)


def _yaw(x, y, z, w, atan2):
    """Yaw (about z) of the normalised quaternion (x y z w): OGBench's `compute_yaw_radians`."""
    norm2 = x * x + y * y + z * z + w * w
    return atan2(2 * (w * z + x * y) / norm2, 1 - 2 * (y * y + z * z) / norm2)


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
class GoalSuccess:
    """The success test of a goal: each listed field within `tolerance` of the goal's value."""

    fields: tuple[str, ...] = ()  # observation labels compared (e.g. the object's position); () = no test
    tolerance: float = 0.0  # the largest Euclidean distance per field, in the field's raw units (e.g. m)

    def __post_init__(self) -> None:
        if self.fields and not self.tolerance > 0:
            raise ValueError(f"goal_success.tolerance: must be > 0 (got {self.tolerance})")


@dataclass(frozen=True)
class InterfaceSpec:
    """A validated robot interface spec."""

    rate_hz: float  # the policy control rate: one dataset row every 1/rate_hz seconds
    observation: tuple[FieldSpec, ...]
    action: ActionSpec
    time_source: str = "header"  # header: header.stamp (log time for messages without one) | log
    interpolation: str = "zoh"  # zoh: latest value | linear: between the samples around each row
    tolerance_s: float = 0.0  # zoh: a sample stamped up to this long after a row still counts for it
    episodes: EpisodeSpec = field(default_factory=EpisodeSpec)
    goal_fields: tuple[str, ...] = ()  # observation labels an operator may set in a goal
    # A partial goal's other values: `current` (the observation when the goal is given) or `reference`
    # (goal_reference's raw values where it has the label, else current)
    goal_fill: str = "current"
    goal_reference: dict[str, tuple[float, ...]] = field(default_factory=dict)  # label → raw values
    goal_success: GoalSuccess = field(default_factory=GoalSuccess)

    def __post_init__(self) -> None:
        self._check_roles()
        self._check_goal_keys()
        if not self.rate_hz > 0:
            raise ValueError(f"rate_hz: must be > 0 (got {self.rate_hz})")
        if self.time_source not in TIME_SOURCES:
            raise ValueError(f"time_source: {self.time_source!r} is not one of {TIME_SOURCES}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation: {self.interpolation!r} is not one of {INTERPOLATIONS}")
        for f in (self, *self.fields):
            if not 0 <= f.tolerance_s < 1.0 / self.rate_hz:
                where = "" if f is self else f"{f.label}: "
                raise ValueError(f"{where}tolerance_s: must be in [0, 1/rate_hz) (got {f.tolerance_s})")
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
        unknown = [x for x in self.goal_fields if x not in obs_labels]
        if unknown:
            raise ValueError(f"goal_fields: {unknown[0]!r} is not an observation label "
                             f"(labels: {', '.join(obs_labels)})")
        for topic in types:
            tolerances = {f.tolerance_s for f in self.fields if f.topic == topic and f.tolerance_s}
            if len(tolerances) > 1:
                raise ValueError(f"topic {topic}: fields declare different tolerance_s ({sorted(tolerances)})")
            rates = {f.rate_hz for f in self.fields if f.topic == topic and f.rate_hz}
            if len(rates) > 1:
                raise ValueError(f"topic {topic}: fields declare different rate_hz ({sorted(rates)})")

    def _check_goal_keys(self) -> None:
        by_label = {f.label: f for f in self.observation}
        if self.goal_fill not in GOAL_FILLS:
            raise ValueError(f"goal_fill: {self.goal_fill!r} is not one of {GOAL_FILLS}")
        for key, labels in (("goal_reference", self.goal_reference), ("goal_success.fields", self.goal_success.fields)):
            unknown = [x for x in labels if x not in by_label]
            if unknown:
                raise ValueError(f"{key}: {unknown[0]!r} is not an observation label (labels: {', '.join(by_label)})")
        for label, values in self.goal_reference.items():
            if not (isinstance(values, (list, tuple)) and len(values) == by_label[label].raw_dim
                    and all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)):
                raise ValueError(f"goal_reference.{label}: expected {by_label[label].raw_dim} finite raw values "
                                 f"(got {values!r})")
            object.__setattr__(self, "goal_reference", {**self.goal_reference, label: tuple(map(float, values))})
        for label in self.goal_success.fields:
            if by_label[label].derive:
                raise ValueError(f"goal_success.fields: {label!r} is derived ({by_label[label].derive}); "
                                 "compare a field of raw values")

    def _check_roles(self) -> None:
        """Observation-only and command-only keys stay where they mean something."""
        for i, f in enumerate(self.observation):
            if f.frame_id or f.limit != 0.0:
                raise ValueError(f"observation[{i}] ({f.label}): frame_id/limit are for action fields")
        for i, f in enumerate(self.action.fields):
            if f.workspace:
                raise ValueError(f"action.fields[{i}] ({f.label}): workspace is for observation fields")
            if f.derive or f.clip:
                raise ValueError(f"action.fields[{i}] ({f.label}): derive/clip are for observation fields "
                                 "(an action field must map back to its command)")
            if (f.affine()[0] == 0).any():
                raise ValueError(f"action.fields[{i}] ({f.label}): scale: 0 cannot be inverted into a command")

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
        return [n for f in self.observation for n in f.value_names]

    @property
    def action_names(self) -> list[str]:
        if self.action.fields:
            return [n for f in self.action.fields for n in f.value_names]
        by_label = {f.label: f for f in self.observation}
        return [f"delta({n})" for label in self.action.delta_of for n in by_label[label].value_names]

    @property
    def period_ns(self) -> float:
        return 1e9 / self.rate_hz

    def workspace_limits(self) -> dict[str, tuple[float, float]]:
        """Every observation field's workspace, by element name, in the observation's units."""
        return {k: v for f in self.observation for k, v in f.workspace_limits().items()}

    def tolerance_ns(self, topic: str | None = None) -> int:
        """zoh: how late a sample of `topic` may be stamped and still count for a row (its fields'
        tolerance_s, else the spec's; no topic: the spec's); linear: 0."""
        if self.interpolation != "zoh":
            return 0
        declared = max((f.tolerance_s for f in self.fields if f.topic == topic), default=0.0)
        return round((declared or self.tolerance_s) * 1e9)

    def max_age_ns(self, topic: str) -> int:
        """Live: how old `topic`'s latest message may be (its fields' max_age_s, else 1.5 periods of its
        rate_hz, else 1.5 control periods)."""
        fields = [f for f in self.fields if f.topic == topic]
        declared = max(f.max_age_s for f in fields)
        rate = max(f.rate_hz for f in fields) or self.rate_hz
        return round((declared or 1.5 / rate) * 1e9)


def load_spec(path: str | Path, overrides: Sequence[str] = ()) -> InterfaceSpec:
    """Read and validate a spec file; `key.sub=value` overrides apply first."""
    return from_dict(InterfaceSpec, apply_overrides(load_yaml(path), overrides), str(path))
