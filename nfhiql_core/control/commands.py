"""The action → the robot's commands, by the interface spec's action fields (the inverse of the map
`nfhiql bag2data` reads recorded commands with), with each field's per-value limits.

One `RawCommand` per command topic: the values in the message's own units and the names that place
them (twist components, joint names, or array indices). The ROS side only fills messages in.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from nfhiql_core.errors import ConfigError
from nfhiql_core.interface.spec import COMMAND_TYPES, FLOAT32_ARRAY, FLOAT64_ARRAY, InterfaceSpec


class RawCommand(NamedTuple):
    topic: str
    type: str
    names: tuple[str, ...]  # TwistStamped components / joint names; MultiArrays: '' (data in order)
    values: np.ndarray
    frame_id: str
    array: str  # JointState / JointTrajectory: the array the values go in (position(s), velocities, ...)


class CommandEncoder:
    """Action vectors → one `RawCommand` per command topic of `spec`."""

    def __init__(self, spec: InterfaceSpec):
        if not spec.action.fields:
            raise ConfigError("interface spec: action.delta_of has no command topics to send the action on "
                              "(give action.fields)")
        self.topics: dict[str, list] = {}
        start = 0
        for i, f in enumerate(spec.action.fields):
            if f.type not in COMMAND_TYPES:
                raise ConfigError(f"interface spec: action.fields[{i}] ({f.label}): {f.type} cannot carry a "
                                  f"command (use one of {', '.join(COMMAND_TYPES)})")
            if f.type in (FLOAT32_ARRAY, FLOAT64_ARRAY) and f.indices:
                raise ConfigError(f"interface spec: action.fields[{i}] ({f.label}): a command fills all of "
                                  "data (drop indices)")
            self.topics.setdefault(f.topic, []).append((f, slice(start, start + f.dim)))
            start += f.dim
        self.dim = start

    def encode(self, action: np.ndarray) -> list[RawCommand]:
        """The commands for `action` (length `dim`), each within its field's limits."""
        out = []
        for topic, parts in self.topics.items():
            first = parts[0][0]
            names = tuple(n for f, _ in parts for n in (f.names or ("",) * f.dim))
            values = np.concatenate([f.raw_command(action[sl]) for f, sl in parts])
            frame = next((f.frame_id for f, _ in parts if f.frame_id), "")
            out.append(RawCommand(topic, first.type, names, values, frame, first.field))
        return out
