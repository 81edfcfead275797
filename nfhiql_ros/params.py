"""ROS parameters declared from a node's parameter dataclass (`nfhiql_ros.contract`).

Each field becomes one parameter with a `ParameterDescriptor` (description, range, read-only), so
`ros2 param describe` explains it and setting a read-only one is refused. Values given on the
command line (`--ros-args -p name:=value`) win over every parameter file: see
docs/design/parameters.md for why rclpy alone would let a file's per-node block beat them.
"""
from __future__ import annotations

import dataclasses
import sys
from typing import Any, Sequence, TypeVar

import yaml
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node
from rclpy.parameter import Parameter

T = TypeVar("T")


def command_line_parameters(args: Sequence[str]) -> list[Parameter]:
    """The `-p name:=value` / `--param name:=value` entries of the `--ros-args` sections of `args`."""
    found: dict[str, Parameter] = {}
    in_ros_args = False
    items = list(args)
    for i, arg in enumerate(items):
        if arg == "--ros-args":
            in_ros_args = True
        elif arg == "--":
            in_ros_args = False
        elif in_ros_args and arg in ("-p", "--param") and i + 1 < len(items) and ":=" in items[i + 1]:
            name, text = items[i + 1].split(":=", 1)
            value = yaml.safe_load(text) if text else ""
            found[name] = Parameter(name, value=value if value is not None else text)
    return list(found.values())


def with_command_line_overrides(node_kwargs: dict[str, Any]) -> dict[str, Any]:
    """`node_kwargs` for rclpy's Node with the command line's `-p` values as parameter overrides.

    rclpy applies `parameter_overrides` after every parameter file, so these win; the process's own
    arguments count (as rclpy.init reads them) and then the node's `cli_args`.
    """
    overrides = command_line_parameters([*sys.argv, *node_kwargs.get("cli_args", [])])
    return {**node_kwargs, "parameter_overrides": [*overrides, *node_kwargs.get("parameter_overrides", [])]}


def descriptor(field: dataclasses.Field) -> ParameterDescriptor:
    """The ParameterDescriptor of one parameter field (see `contract.param`)."""
    meta = field.metadata
    d = ParameterDescriptor(name=field.name, description=meta.get("description", ""),
                            read_only=meta.get("read_only", True))
    if meta.get("choices"):
        d.additional_constraints = "one of: " + ", ".join(meta["choices"])
    low, high = meta.get("low"), meta.get("high")
    is_int = field.type in ("int", "tuple[int, ...]")
    if (low is not None or high is not None) and field.type in ("int", "float"):
        if is_int:
            d.integer_range = [IntegerRange(from_value=int(low if low is not None else -2**63),
                                            to_value=int(high if high is not None else 2**63 - 1), step=0)]
        else:
            big = sys.float_info.max
            d.floating_point_range = [FloatingPointRange(from_value=float(low if low is not None else -big),
                                                         to_value=float(high if high is not None else big), step=0.0)]
    elif low is not None or high is not None:  # arrays: rclpy ranges apply to scalars only
        bounds = f"elements in [{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'}]"
        d.additional_constraints = "; ".join(filter(None, (d.additional_constraints, bounds)))
    return d


def declare_parameters(node: Node, params_cls: type[T]) -> T:
    """Declare every field of `params_cls` as a parameter of `node` and return the values it got.

    Defaults come from the dataclass; parameter files and the command line override them. Tuples
    are ROS arrays. The dataclass validates the result.
    """
    values = {}
    for field in dataclasses.fields(params_cls):
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        as_tuple = isinstance(default, tuple)
        node.declare_parameter(field.name, list(default) if as_tuple else default, descriptor(field))
        value = node.get_parameter(field.name).value
        values[field.name] = tuple(value) if as_tuple else value
    return params_cls(**values)
