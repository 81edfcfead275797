"""Per-topic decoding: one message → (stamp in ns, float64 vector of its raw values).

Bags hand serialized (CDR) messages to a `make_decoder` decoder; the live nodes hand rclpy message
objects to `message_extractor`'s, which read the same attributes: one extraction code path.

One decoder per topic serves every spec field on that topic (their values concatenated in spec
order), so each message is decoded once. Messages are deserialized with the rosbags type store,
except `sensor_msgs/JointState` — usually the highest-rate topic of a robot log — which is read
straight from its little-endian CDR bytes: the header/name part of a message is compared with the
last one seen (the same publisher repeats it byte for byte) and only the three float64 arrays are
parsed. The first message of every new name layout goes through rosbags and must agree with the
fast path, which turns itself off for the topic otherwise.

Decoders raise `ExtractError(field, problem)`; the caller adds the bag, topic and message number.
"""
from __future__ import annotations

import operator
import struct
from typing import Any, Callable, Sequence

import numpy as np

from nfhiql_core.interface.spec import (
    BOOL,
    FLOAT32,
    FLOAT64,
    JOINT_STATE,
    JOINT_TRAJECTORY,
    KINDS,
    POSE_STAMPED,
    QUATERNION,
    TRANSFORM_STAMPED,
    TWIST_STAMPED,
    FieldSpec,
)

Decoder = Callable[[bytes], "tuple[int, np.ndarray]"]  # raw CDR → (header stamp ns or 0, values)
Deserialize = Callable[[bytes, str], Any]  # rosbags' (raw, msgtype) → message

_NAME_CACHE_SIZE = 64  # distinct joint-name orders remembered per topic
_JOINT_ARRAYS = ("position", "velocity", "effort")  # JointState's float64 sequences, in CDR order
_STAMP = struct.Struct("<iI")
_UINT32 = struct.Struct("<I")
_COMPONENT_PATHS = {
    POSE_STAMPED: {"x": "pose.position.x", "y": "pose.position.y", "z": "pose.position.z",
                   "qx": "pose.orientation.x", "qy": "pose.orientation.y", "qz": "pose.orientation.z",
                   "qw": "pose.orientation.w"},
    TRANSFORM_STAMPED: {"x": "transform.translation.x", "y": "transform.translation.y", "z": "transform.translation.z",
                        "qx": "transform.rotation.x", "qy": "transform.rotation.y", "qz": "transform.rotation.z",
                        "qw": "transform.rotation.w"},
    **{t: {"data": "data"} for t in (FLOAT64, FLOAT32, BOOL)},
    TWIST_STAMPED: {"vx": "twist.linear.x", "vy": "twist.linear.y", "vz": "twist.linear.z",
                    "wx": "twist.angular.x", "wy": "twist.angular.y", "wz": "twist.angular.z"},
}


class ExtractError(ValueError):
    """A message does not provide what the spec asks for: (field, problem)."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"field {field}: {problem}")
        self.field, self.problem = field, problem


def value_fields(spec: FieldSpec) -> list[str]:
    """The message field each of `spec`'s values comes from, e.g. 'position[elbow]', 'data[3]'."""
    if spec.type == JOINT_TRAJECTORY:
        return [f"points[0].{spec.field}[{name}]" for name in spec.names]
    if spec.field == "data":
        return [f"data[{i}]" for i in (spec.indices or range(spec.size))]
    if spec.field:
        return [f"{spec.field}[{name}]" for name in spec.names]
    return [_COMPONENT_PATHS[spec.type][name] for name in spec.names]


def stamp_getter(message_class: type) -> Callable[[Any], int] | None:
    """ns of `msg.header.stamp` (or of a bare std_msgs/Header), None for types without a stamp."""
    fields = getattr(message_class, "__dataclass_fields__", {})
    if "header" in fields:
        get = operator.attrgetter("header.stamp")
    elif "stamp" in fields and "frame_id" in fields:
        get = operator.attrgetter("stamp")
    else:
        return None

    def stamp(msg: Any) -> int:
        st = get(msg)
        return st.sec * 1_000_000_000 + st.nanosec

    return stamp


def deserializer(deserialize: Deserialize, msgtype: str) -> Callable[[bytes], Any]:
    """rosbags deserialization of `msgtype`, its errors as ExtractError."""
    def decode(raw: bytes) -> Any:
        try:
            return deserialize(raw, msgtype)
        except Exception as exc:  # rosbags raises several types on corrupt data
            raise ExtractError("(whole message)", f"cannot be decoded as {msgtype} ({one_line(exc)})") from None
    return decode


def make_decoder(fields: Sequence[FieldSpec], message_class: type, deserialize: Deserialize,
                 header_stamps: bool, align_quaternions: bool = False) -> Decoder:
    """The decoder for the fields of one topic (all of one message type).

    `header_stamps` False: the stamp is always reported as 0 (the caller uses log time).
    `align_quaternions`: see `ComponentExtractor` (for interpolating between messages).
    """
    msgtype = fields[0].type
    decode = deserializer(deserialize, msgtype)
    if msgtype == JOINT_STATE:
        return JointStateDecoder(fields, decode, header_stamps)
    extract = message_extractor(fields, align_quaternions)
    stamp = stamp_getter(message_class) if header_stamps else None

    def decode_generic(raw: bytes) -> tuple[int, np.ndarray]:
        msg = decode(raw)
        return (stamp(msg) if stamp else 0), extract(msg)

    return decode_generic


def message_extractor(fields: Sequence[FieldSpec], align_quaternions: bool = False) -> Callable[[Any], np.ndarray]:
    """Message object → the raw values of `fields` (all of one topic), concatenated in order."""
    msgtype = fields[0].type
    if msgtype == JOINT_STATE:
        selector = JointSelector(fields)
        return lambda msg: selector.select(tuple(msg.name), {a: msg_array(msg, a) for a in _JOINT_ARRAYS})
    kind = KINDS[msgtype]
    return (JointSelector(fields).from_trajectory if kind.by_joint_name
            else ComponentExtractor(fields, align_quaternions) if kind.components else ArrayExtractor(fields))


def msg_array(msg: Any, name: str) -> np.ndarray:
    """A numeric sequence of a message (rosbags: numpy; rclpy: array.array) as float64."""
    return np.asarray(getattr(msg, name), dtype=np.float64)


def one_line(exc: BaseException) -> str:
    """An exception's message on one line."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _slices(fields: Sequence[FieldSpec]) -> list[slice]:
    ends = np.cumsum([0] + [f.raw_dim for f in fields])
    return [slice(int(a), int(b)) for a, b in zip(ends[:-1], ends[1:])]


class JointSelector:
    """Values of named joints, whatever the order of names in a message.

    The name → index lookup is cached per name order; an array the message leaves empty (e.g. no
    velocities) yields NaN, which is an error only where a row uses it.
    """

    def __init__(self, fields: Sequence[FieldSpec]):
        self.dim = sum(f.raw_dim for f in fields)
        self.parts = [(f.field, f.names, sl) for f, sl in zip(fields, _slices(fields))]
        self._cache: dict[tuple[str, ...], list[np.ndarray]] = {}

    def _indices(self, names: tuple[str, ...]) -> list[np.ndarray]:
        where = {name: i for i, name in enumerate(names)}
        out = []
        for array, wanted, _ in self.parts:
            missing = [n for n in wanted if n not in where]
            if missing:
                have = ", ".join(names) or "no names"
                raise ExtractError(f"{array}[{missing[0]}]", f"joint {missing[0]!r} missing (message has {have})")
            out.append(np.array([where[n] for n in wanted], dtype=np.intp))
        if len(self._cache) >= _NAME_CACHE_SIZE:
            self._cache.clear()
        self._cache[names] = out
        return out

    def select(self, names: tuple[str, ...], arrays: dict[str, np.ndarray]) -> np.ndarray:
        """The wanted values from `arrays` (array name → one value per name)."""
        indices = self._cache.get(names) or self._indices(names)
        out = np.empty(self.dim)
        for (array, _, sl), index in zip(self.parts, indices):
            values = arrays[array]
            if len(values) == len(names):
                out[sl] = values[index]
            elif len(values) == 0:
                out[sl] = np.nan
            else:
                raise ExtractError(array, f"{len(values)} values for {len(names)} joint names")
        return out

    def from_trajectory(self, msg: Any) -> np.ndarray:
        """trajectory_msgs/JointTrajectory: the first point's arrays."""
        if not msg.points:
            raise ExtractError("points", "the trajectory has no point")
        point = msg.points[0]
        return self.select(tuple(msg.joint_names), {a: msg_array(point, a) for a, _, _ in self.parts})


class JointStateDecoder:
    """sensor_msgs/JointState, read from little-endian CDR (see the module docstring)."""

    def __init__(self, fields: Sequence[FieldSpec], decode: Callable[[bytes], Any], header_stamps: bool):
        self.selector = JointSelector(fields)
        self.decode = decode
        self.header_stamps = header_stamps
        self.prefix: bytes | None = None  # CDR bytes from header.frame_id to the end of `name`
        self.names: tuple[str, ...] = ()
        self.arrays_at = 0  # payload offset of `position`'s length
        self.fast = True

    def __call__(self, raw: bytes) -> tuple[int, np.ndarray]:
        if self.prefix is None or raw[1] != 1 or not raw.startswith(self.prefix, 12):
            return self._slow(raw)
        stamp = _stamp(raw) if self.header_stamps else 0
        return stamp, self.selector.select(self.names, dict(zip(_JOINT_ARRAYS, self._arrays(raw))))

    def _arrays(self, raw: bytes) -> list[np.ndarray]:
        """The three float64 sequences (CDR: uint32 count aligned to 4, elements aligned to 8)."""
        pos, out = self.arrays_at, []
        try:
            for _ in _JOINT_ARRAYS:
                pos = (pos + 3) & -4
                (n,) = _UINT32.unpack_from(raw, 4 + pos)
                pos += 4
                if n:
                    pos = (pos + 7) & -8
                out.append(np.frombuffer(raw, "<f8", n, 4 + pos))
                pos += 8 * n
        except (struct.error, ValueError):
            raise ExtractError("(whole message)", "truncated JointState") from None
        if 4 + pos + 3 < len(raw):
            raise ExtractError("(whole message)", "JointState longer than its content")
        return out

    def _slow(self, raw: bytes) -> tuple[int, np.ndarray]:
        """rosbags decodes the message; a little-endian one teaches the fast path its name layout."""
        msg = self.decode(raw)
        names = tuple(msg.name)
        arrays = {a: getattr(msg, a) for a in _JOINT_ARRAYS}
        if self.fast and raw[1] == 1:
            pos = _cdr_string_end(8, msg.header.frame_id)
            pos = ((pos + 3) & -4) + 4
            for name in names:
                pos = _cdr_string_end(pos, name)
            self.prefix, self.names, self.arrays_at = raw[12: 4 + pos], names, pos
            try:
                agrees = all(np.array_equal(a, arrays[k], equal_nan=True)
                             for k, a in zip(_JOINT_ARRAYS, self._arrays(raw)))
            except ExtractError:
                agrees = False
            if not agrees:  # never expected; stay correct rather than fast
                self.fast, self.prefix = False, None
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec if self.header_stamps else 0
        return stamp, self.selector.select(names, arrays)


def _stamp(raw: bytes) -> int:
    sec, nanosec = _STAMP.unpack_from(raw, 4)
    return sec * 1_000_000_000 + nanosec


def _cdr_string_end(pos: int, text: str) -> int:
    """Payload offset after a CDR string starting at `pos` (uint32 length incl. NUL, aligned to 4)."""
    return ((pos + 3) & -4) + 4 + len(text.encode()) + 1


class ComponentExtractor:
    """Pose / transform / twist / scalar components. With `align_quaternions` a pose's quaternion
    is sign-aligned with the previous message's (q and -q are the same rotation), so values
    interpolated between messages stay continuous; otherwise values are the message's own."""

    def __init__(self, fields: Sequence[FieldSpec], align_quaternions: bool = False):
        paths = _COMPONENT_PATHS[fields[0].type]
        self.get = operator.attrgetter(*[paths[n] for f in fields for n in f.names])
        self.quaternions = [np.array([sl.start + f.names.index(c) for c in QUATERNION])
                            for f, sl in zip(fields, _slices(fields)) if f.has_quaternion and align_quaternions]
        self.previous: list[np.ndarray | None] = [None] * len(self.quaternions)
        self.single = sum(f.raw_dim for f in fields) == 1

    def __call__(self, msg: Any) -> np.ndarray:
        out = np.array([self.get(msg)] if self.single else self.get(msg), dtype=np.float64)
        for i, cols in enumerate(self.quaternions):
            q, prev = out[cols], self.previous[i]
            if prev is not None and float(q @ prev) < 0.0:
                out[cols] = q = -q
            self.previous[i] = q
        return out


class ArrayExtractor:
    """Float32/Float64MultiArray `data`: exactly `size` values, optionally a subset."""

    def __init__(self, fields: Sequence[FieldSpec]):
        self.parts = [(f.size, np.array(f.indices or range(f.size), dtype=np.intp)) for f in fields]
        self.simple = len(fields) == 1 and not fields[0].indices

    def __call__(self, msg: Any) -> np.ndarray:
        data = msg_array(msg, "data")
        for size, _ in self.parts:
            if len(data) != size:
                raise ExtractError("data", f"{len(data)} values, the spec says size {size}")
        if self.simple:
            return data
        return np.concatenate([data[index] for _, index in self.parts])
