"""ROS parameters declared from one dataclass per node: defaults, types and validation in one place."""
from __future__ import annotations

import dataclasses
from typing import TypeVar

from rclpy.node import Node

T = TypeVar("T")


def declare_parameters(node: Node, params_cls: type[T]) -> T:
    """Declare every field of `params_cls` as a parameter of `node` and return the values it got.

    Defaults come from the dataclass; values from `--ros-args -p`/`--params-file` override them.
    Tuples are ROS arrays. The dataclass's `__post_init__` validates the result.
    """
    values = {}
    for field in dataclasses.fields(params_cls):
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        as_tuple = isinstance(default, tuple)
        node.declare_parameter(field.name, list(default) if as_tuple else default)
        value = node.get_parameter(field.name).value
        values[field.name] = tuple(value) if as_tuple else value
    return params_cls(**values)
