"""YAML → dataclass validation, with `section.key=value` command-line overrides.

Every dataclass field is a knob with exactly one home. Unknown keys, wrong types and bad
override syntax raise ConfigError naming the file and the dotted key.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Sequence, TypeVar

import yaml

from nfhiql_core.errors import ConfigError

T = TypeVar("T")


def from_dict(cls: type[T], data: Any, source: str, prefix: str = "") -> T:
    """Build dataclass `cls` from a mapping, checking keys and value types recursively."""
    where = prefix.rstrip(".") or "<top level>"
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{source}: unknown key {prefix}{unknown[0]} (valid: {', '.join(sorted(fields))})")
    missing = [n for n, f in fields.items() if n not in data and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{source}: missing required key {prefix}{missing[0]}")
    values = {name: _coerce(hints[name], value, source, f"{prefix}{name}") for name, value in data.items()}
    try:
        return cls(**values)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{source}: {where}: {exc}") from None


def _coerce(hint: Any, value: Any, source: str, key: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, source, f"{key}.")
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        others = [option for option in options if option is not type(None)]
        if len(others) == 1:  # X | None: X's own error (e.g. the missing key of a nested dataclass)
            return _coerce(others[0], value, source, key)
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, source, key)
            except ConfigError:
                continue
        raise ConfigError(f"{source}: {key}: {value!r} does not match {hint}")
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key}: expected a mapping, got {value!r}")
        return dict(value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: {key}: expected a list, got {value!r}")
        (item,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
        if dataclasses.is_dataclass(item):  # name the element: observation[2].names
            return tuple(_coerce(item, v, source, f"{key}[{i}]") for i, v in enumerate(value))
        return tuple(_coerce(item, v, source, key) for v in value)
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is Any or (isinstance(hint, type) and isinstance(value, hint)
                       and not (hint is int and isinstance(value, bool))):
        return value
    raise ConfigError(f"{source}: {key}: expected {getattr(hint, '__name__', hint)}, got {value!r}")


def apply_overrides(data: dict, overrides: Sequence[str], source: str = "command line") -> dict:
    """Apply `a.b.c=value` strings (values parsed as YAML) to a nested dict, in place."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{source}: override {item!r} is not of the form key.sub=value")
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{source}: override {item!r}: {part} is not a section")
        node[leaf] = yaml.safe_load(raw)
    return data


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping; ConfigError names the file on any problem."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def to_dict(obj: Any) -> Any:
    """Dataclass → plain dict/list structure (tuples become lists), for YAML/JSON/checkpoints."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj
