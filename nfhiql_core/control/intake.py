"""Checks every received vector passes before a policy node uses it.

A message is rejected, with a reason that is counted, when its values have the wrong length or are
not finite, its stamp is zero, its names differ from the bundle's, its stamp lies more than
`max_skew_ns` ahead of the node's own clock, or it is not newer than the stream's previous one.
Freshness is decided on the node's receive clock (`Stream.age_ns`), so a stamp — of any sign —
can neither freeze a stream nor keep it fresh: a future-stamped message is refused, and one
accepted within the skew bound can hold later messages off for at most that bound.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


class Rejected(ValueError):
    """A message that cannot be used; `reason` is the counter key (e.g. 'future_stamp')."""

    def __init__(self, topic: str, reason: str, detail: str):
        super().__init__(f"{topic}: {detail}")
        self.topic, self.reason = topic, reason


def check_vector(topic: str, values: Sequence[float], stamp: int, names: Sequence[str], dim: int,
                 expected_names: Sequence[str]) -> np.ndarray:
    """`values` as a float64 `dim`-vector; Rejected if it has the wrong length, non-finite values, a zero
    stamp, or `names` (when given) that differ from `expected_names`."""
    array = np.asarray(values, dtype=np.float64)
    if array.shape != (dim,):
        raise Rejected(topic, "length", f"expected {dim} values, got {array.size}")
    if not np.isfinite(array).all():
        raise Rejected(topic, "non_finite", f"non-finite value at index {int(np.flatnonzero(~np.isfinite(array))[0])}")
    if stamp == 0:
        raise Rejected(topic, "zero_stamp", "header.stamp is zero (every vector message must be stamped)")
    if len(names) and tuple(names) != tuple(expected_names):
        if len(names) != len(expected_names):
            detail = f"{len(names)} names, the bundle has {len(expected_names)}"
        else:
            i = next(i for i, (a, b) in enumerate(zip(names, expected_names)) if a != b)
            detail = f"name[{i}] is {names[i]!r}, the bundle's is {expected_names[i]!r}"
        raise Rejected(topic, "names", f"element names differ from the bundle's ({detail})")
    return array


@dataclass
class Stream:
    """The last accepted message of one input stream: its stamp and when it arrived (node clock, ns)."""

    topic: str
    max_skew_ns: int
    stamp: int | None = None
    arrival: int | None = None

    def admit(self, stamp: int, now: int, ordered: bool = True) -> None:
        """Accept a message stamped `stamp` arriving at `now`, or raise Rejected (future / not newer)."""
        if stamp - now > self.max_skew_ns:
            raise Rejected(self.topic, "future_stamp", f"stamped {(stamp - now) / 1e9:.3f} s ahead of this node's "
                           f"clock (allowed skew {self.max_skew_ns / 1e9:.3f} s)")
        if ordered and self.stamp is not None and stamp <= self.stamp:
            raise Rejected(self.topic, "not_newer", "stamp not newer than the previous one")
        self.stamp, self.arrival = stamp, now

    def age_ns(self, now: int) -> int | None:
        """How old the last message is: since it arrived, or since its stamp beyond the allowed skew."""
        if self.arrival is None:
            return None
        return max(now - self.arrival, now - self.stamp - self.max_skew_ns)
