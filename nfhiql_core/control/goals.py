"""Operator goals: what can be asked for, how it becomes a full goal observation, and why one is refused.

A request names exactly one of: a goal from the book (`name`: from a goals file or taught), a full
goal observation (`observation`), or some of the robot interface's goal fields (`fields`) in their
raw message units (metres, not the observation's scaled values). A field whose raw values hold a
pose's whole quaternion takes one number instead: a yaw in radians (rotation about z), which then
also sets every other quaternion field of the same topic that was not given. Fields not given
follow the spec's `goal_fill` rule (the current observation, or `goal_reference`).

Acceptance (`GoalBook.resolve`): finite values of the right sizes; each value within the training
data's range widened by `range_margin` of its span (the bundle's `data_range`); and, when a
plausibility function is given, the high-level policy's log-likelihood of its subgoal towards the
goal from the current observation at least `min_log_likelihood`. A refusal is a `GoalRejected`
whose message names the field and the numbers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from nfhiql_core.config import load_yaml
from nfhiql_core.errors import NfhiqlError
from nfhiql_core.interface.spec import FeatureMap, FieldSpec, InterfaceSpec


class GoalRejected(NfhiqlError):
    """A goal request that is refused; the message says why."""


@dataclass(frozen=True)
class GoalRequest:
    """One operator request (exactly one of name, observation, fields)."""

    name: str = ""
    observation: tuple[float, ...] = ()
    field_names: tuple[str, ...] = ()
    field_values: tuple[float, ...] = ()


@dataclass(frozen=True)
class DataRange:
    """Per-value range of the training data's observations (the bundle's `data_range`)."""

    low: np.ndarray
    high: np.ndarray

    def widened(self, margin: float) -> tuple[np.ndarray, np.ndarray]:
        span = self.high - self.low
        return self.low - margin * span, self.high + margin * span


def yaw_quaternion(field: FieldSpec, yaw: float) -> np.ndarray:
    """The raw values of a pose field's components for a rotation of `yaw` about z (position: 0)."""
    quaternion = {"qx": 0.0, "qy": 0.0, "qz": math.sin(yaw / 2), "qw": math.cos(yaw / 2)}
    return np.array([quaternion.get(name, 0.0) for name in field.names])


def takes_yaw(field: FieldSpec) -> bool:
    """A field whose raw values are a pose's whole quaternion is given as one yaw angle."""
    return field.has_quaternion and set(field.names) <= {"qx", "qy", "qz", "qw"}


class GoalBook:
    """Resolves and checks goal requests for one bundle and robot interface; holds the named goals."""

    def __init__(self, goal_names: Sequence[str], spec: InterfaceSpec | None = None,
                 data_range: DataRange | None = None, range_margin: float = 0.1,
                 plausibility: Callable[[np.ndarray, np.ndarray], float] | None = None,
                 min_log_likelihood: float | None = None):
        self.goal_names = tuple(goal_names)
        self.dim = len(self.goal_names)
        self.spec = spec
        self.data_range, self.range_margin = data_range, range_margin
        self.plausibility, self.min_log_likelihood = plausibility, min_log_likelihood
        self.goals: dict[str, np.ndarray] = {}
        self.sources: dict[str, str] = {}
        self.fields: dict[str, tuple[FieldSpec, slice]] = {}
        if spec is not None:
            at = 0
            for f in spec.observation:
                self.fields[f.label] = (f, slice(at, at + f.dim))
                at += f.dim
            if at != self.dim:
                raise ValueError(f"robot interface: {at} observation values for a goal of {self.dim}")

    # ---- the book

    def add(self, name: str, goal: np.ndarray, source: str, overwrite: bool = False) -> None:
        """Keep `goal` under `name` (after the same checks as a requested goal)."""
        if not name:
            raise GoalRejected("a goal needs a non-empty name")
        if name in self.goals and not overwrite:
            raise GoalRejected(f"goal {name!r} exists ({self.sources[name]}); pass overwrite to replace it")
        self.goals[name] = self._checked(np.asarray(goal, dtype=np.float64), None)
        self.sources[name] = source

    def teach(self, name: str, observation: np.ndarray | None, overwrite: bool = False) -> np.ndarray:
        """The current observation becomes the named goal `name`."""
        if observation is None:
            raise GoalRejected("no observation yet to teach a goal from")
        self.add(name, observation, "taught", overwrite)
        return self.goals[name]

    def load_file(self, path: str | Path) -> None:
        """Named goals from YAML: `goals: {name: {observation: [...]} | {fields: {label: raw values}}}`.
        Field goals are filled from `goal_reference` (there is no current observation at load time)."""
        data = load_yaml(path)
        goals = data.get("goals") if isinstance(data, dict) else None
        if not isinstance(goals, dict) or set(data) != {"goals"}:
            raise NfhiqlError(f"{path}: expected one key `goals` mapping names to goals")
        for name, entry in goals.items():
            if not isinstance(entry, dict) or len(entry) != 1 or next(iter(entry)) not in ("observation", "fields"):
                raise NfhiqlError(f"{path}: goals.{name}: expected {{observation: [...]}} or {{fields: {{...}}}}")
            try:
                if "observation" in entry:
                    request = GoalRequest(observation=tuple(entry["observation"]))
                else:
                    fields = entry["fields"]
                    values = [v for x in fields.values() for v in (x if isinstance(x, (list, tuple)) else [x])]
                    request = GoalRequest(field_names=tuple(fields), field_values=tuple(values))
                self.add(str(name), self.resolve(request, None, check_plausibility=False), "file", overwrite=True)
            except (GoalRejected, TypeError, ValueError) as exc:
                raise NfhiqlError(f"{path}: goals.{name}: {exc}") from None

    def listing(self) -> list[tuple[str, str]]:
        return [(name, self.sources[name]) for name in self.goals]

    # ---- requests

    def resolve(self, request: GoalRequest, current: np.ndarray | None, check_plausibility: bool = True) -> np.ndarray:
        """The full goal observation `request` asks for, or GoalRejected with the reason."""
        given = [bool(request.name), bool(request.observation), bool(request.field_names or request.field_values)]
        if sum(given) != 1:
            raise GoalRejected("give exactly one of: a goal name, a full goal observation, or goal fields")
        if request.name:
            if request.name not in self.goals:
                known = ", ".join(self.goals) or "none"
                raise GoalRejected(f"unknown goal name {request.name!r} (known: {known})")
            goal = self.goals[request.name]
        elif request.observation:
            goal = np.asarray(request.observation, dtype=np.float64)
            if goal.shape != (self.dim,):
                raise GoalRejected(f"observation: {goal.size} values for a goal of {self.dim}")
        else:
            goal = self._from_fields(request.field_names, request.field_values, current)
        goal = self._checked(goal, current if check_plausibility else None)
        return goal.copy()

    def field_values(self, goal: np.ndarray, names: Sequence[str]) -> list[float]:
        """The raw values of fields `names` in goal observation `goal`, as a request gives them (the
        inverse of the fields' mapping: metres for a position, one yaw for a whole quaternion)."""
        if self.spec is None:
            raise GoalRejected("goal fields need a robot interface (this bundle has none)")
        values: list[float] = []
        for name in names:
            if name not in self.fields:
                raise GoalRejected(f"field {name!r} is not an observation field (fields: {', '.join(self.fields)})")
            f, at = self.fields[name]
            part = np.asarray(goal, dtype=np.float64)[at]
            if f.derive:  # yaw, or cos/sin of it
                values.append(float(part[0]) if f.derive == "yaw" else math.atan2(part[1], part[0]))
                continue
            raw = f.raw_values(part)
            if takes_yaw(f):
                q = dict(zip(f.names, raw.tolist()))
                values.append(math.atan2(2 * (q["qw"] * q["qz"] + q["qx"] * q["qy"]),
                                         1 - 2 * (q["qy"] ** 2 + q["qz"] ** 2)))
            else:
                values += raw.tolist()
        return values

    def _from_fields(self, names: Sequence[str], values: Sequence[float], current: np.ndarray | None) -> np.ndarray:
        if self.spec is None:
            raise GoalRejected("goal fields need a robot interface (this bundle has none): give a full observation")
        allowed = self.spec.goal_fields or tuple(self.fields)
        unknown = [n for n in names if n not in allowed]
        if unknown:
            raise GoalRejected(f"field {unknown[0]!r} is not a goal field (goal fields: {', '.join(allowed)})")
        if len(set(names)) != len(names):
            raise GoalRejected(f"a field is given twice in {list(names)}")
        values = list(values)
        raw: dict[str, np.ndarray] = {}
        yaws: dict[str, float] = {}
        for name in names:
            f = self.fields[name][0]
            size = 1 if takes_yaw(f) else f.raw_dim
            if len(values) < size:
                raise GoalRejected(f"field_values: too few values ({name} takes {size})")
            part, values = values[:size], values[size:]
            if not all(math.isfinite(v) for v in part):
                raise GoalRejected(f"field {name}: non-finite value in {part}")
            if takes_yaw(f):
                yaws.setdefault(f.topic, part[0])
                raw[name] = yaw_quaternion(f, part[0])
            else:
                raw[name] = np.asarray(part, dtype=np.float64)
        if values:
            raise GoalRejected(f"field_values: {len(values)} values left over after {', '.join(names)}")
        goal = self._fill(current, set(raw) | {label for label, (f, _) in self.fields.items()
                                                if takes_yaw(f) and f.topic in yaws})
        for label, (f, at) in self.fields.items():
            if label not in raw and takes_yaw(f) and f.topic in yaws:  # the same pose's other quaternion fields
                raw[label] = yaw_quaternion(f, yaws[f.topic])
            if label in raw:
                goal[at] = FeatureMap([f]).row(raw[label])
        return goal

    def _fill(self, current: np.ndarray | None, given: set[str]) -> np.ndarray:
        """The values of the fields not `given`: goal_fill's rule."""
        reference = self.spec.goal_reference if self.spec.goal_fill == "reference" else {}
        missing = [label for label in self.fields if label not in reference and label not in given]
        if current is None:
            if missing:
                raise GoalRejected(f"no current observation to fill {missing[0]} from (goal_fill "
                                   f"{self.spec.goal_fill}); give the full goal or a goal_reference")
            goal = np.zeros(self.dim)
        else:
            goal = np.asarray(current, dtype=np.float64).copy()
        for label, values in reference.items():
            f, at = self.fields[label]
            goal[at] = FeatureMap([f]).row(np.asarray(values))
        return goal

    def _checked(self, goal: np.ndarray, current: np.ndarray | None) -> np.ndarray:
        if goal.shape != (self.dim,):
            raise GoalRejected(f"goal: {goal.size} values for a goal of {self.dim}")
        bad = np.flatnonzero(~np.isfinite(goal))
        if bad.size:
            raise GoalRejected(f"goal value {self.goal_names[bad[0]]} is not finite")
        if self.data_range is not None:
            low, high = self.data_range.widened(self.range_margin)
            out = np.flatnonzero((goal < low) | (goal > high))
            if out.size:
                i = out[0]
                raise GoalRejected(
                    f"goal value {self.goal_names[i]} = {goal[i]:.4g} is outside the training data's range "
                    f"[{self.data_range.low[i]:.4g}, {self.data_range.high[i]:.4g}] (+{self.range_margin:.0%} margin)")
        if current is not None and self.plausibility is not None and self.min_log_likelihood is not None:
            log_likelihood = self.plausibility(np.asarray(current, dtype=np.float64), goal)
            if not log_likelihood >= self.min_log_likelihood:
                raise GoalRejected(
                    f"the subgoal policy finds this goal implausible from here: log-likelihood {log_likelihood:.2f} "
                    f"< {self.min_log_likelihood:.2f} (the training data's OOD threshold less the margin)")
        return goal


def data_range_from(meta_entry: Mapping[str, Sequence[float]] | None, dim: int) -> DataRange | None:
    """The bundle's `data_range` entry ({low, high}) as a DataRange, None when absent."""
    if not meta_entry:
        return None
    low, high = (np.asarray(meta_entry[k], dtype=np.float64) for k in ("low", "high"))
    if low.shape != (dim,) or high.shape != (dim,):
        raise ValueError(f"data_range: expected {dim} values for low and high")
    return DataRange(low, high)
