"""Live observation assembly: the robot's own topics → the policy's observation vector, by the same
interface spec (and the same extraction and feature code) that `nfhiql bag2data` converts recordings with.

Each topic of the spec is a stream. A message is decoded once on arrival (joints looked up by name,
whatever their order) into that stream's part of the observation; a message whose used values are
missing or not finite makes the stream invalid until a good one arrives (values the spec does not
use are never read). Stamps are admitted like every other input (`intake.Stream`: refused when
further in the future than the allowed skew or not newer); freshness is judged on the receive clock
against each stream's max age (`InterfaceSpec.max_age_ns`).

Two ways out. Lockstep (`lockstep=True`): every state's messages are queued per stream and
`on_message` returns the observation once each stream has one for the oldest state not yet
given out — the stamped streams' messages carry that state's stamp (the sim stamps them alike), a
stream without a header (e.g. a std_msgs/Float64 contact signal) gives its next message in
order — so a consumer that falls behind still assembles every state from its own messages
(messages of a state some stream never delivered are dropped and counted). Realtime: `assemble(now)` gives the
observation from every stream's latest part, stamped with the newest of their stamps, or the first
stream that is missing, stale or invalid, by name. `next_deadline()` is when, without new messages,
the next stream turns stale. Every method takes the node clock (`now`, ns): no clock is read here.
"""
from __future__ import annotations

from collections import Counter, deque
from typing import Any, NamedTuple

import numpy as np

from nfhiql_core.control.intake import Rejected, Stream
from nfhiql_core.interface.extract import ExtractError, message_extractor
from nfhiql_core.interface.spec import FeatureMap, InterfaceSpec

LOCKSTEP_QUEUE = 64  # states a stream's messages are kept for, waiting for the other streams


class Assembled(NamedTuple):
    values: np.ndarray  # the observation (float64)
    stamp: int  # the newest stamp of the messages it is made of


class Unusable(NamedTuple):
    """Why there is no observation: the stream (topic) at fault and what is wrong with it."""

    topic: str
    reason: str  # missing | stale | invalid
    detail: str


def header_stamp(msg: Any) -> int | None:
    """ns of `msg.header.stamp`, None for a message without a header."""
    header = getattr(msg, "header", None)
    return None if header is None else header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


class _Part:
    """One topic's stream: its place in the observation and its latest decoded part."""

    def __init__(self, spec: InterfaceSpec, topic: str, max_skew_ns: int):
        fields = [f for f in spec.observation if f.topic == topic]
        ends = np.cumsum([0] + [f.dim for f in spec.observation])
        self.topic, self.fields = topic, fields
        self.index = np.concatenate([np.arange(ends[i], ends[i + 1])
                                     for i, f in enumerate(spec.observation) if f.topic == topic])
        self.features = FeatureMap(fields)
        self.names = [n for f in fields for n in f.value_names]
        self.extract = message_extractor(fields)
        self.max_age_ns = spec.max_age_ns(topic)
        self.stream = Stream(topic, max_skew_ns)
        self.values: np.ndarray | None = None
        self.invalid: str = ""  # why the latest message could not be used ('' = it could)
        self.queue: deque[tuple[int | None, np.ndarray]] = deque(maxlen=LOCKSTEP_QUEUE)  # lockstep: (stamp, values)

    def decode(self, msg: Any) -> np.ndarray:
        """The message's part of the observation; Rejected when a used value is missing or not finite."""
        try:
            raw = self.extract(msg)
        except ExtractError as exc:
            raise Rejected(self.topic, "invalid", str(exc)) from None
        values = self.features.row(raw)
        if not np.isfinite(values).all():
            bad = int(np.flatnonzero(~np.isfinite(values))[0])
            raise Rejected(self.topic, "invalid", f"{self.names[bad]} is not finite")
        return values


class ObservationAssembler:
    """The streams of one interface spec (see the module docstring)."""

    def __init__(self, spec: InterfaceSpec, max_skew_ns: int, lockstep: bool = False):
        self.spec, self.lockstep = spec, lockstep
        self.dim = sum(f.dim for f in spec.observation)
        self.parts = {topic: _Part(spec, topic, max_skew_ns)
                      for topic in dict.fromkeys(f.topic for f in spec.observation)}
        self.drops: Counter[str] = Counter()  # '<topic>: <reason>' → messages refused
        self.emitted = -1  # lockstep: the stamp of the last observation given out

    @property
    def topics(self) -> list[str]:
        return list(self.parts)

    def on_message(self, topic: str, msg: Any, now: int) -> Assembled | None:
        """Take one message of `topic` (arrival `now`). Lockstep: the observation, when this message
        completes the set of the newest stamp. Raises Rejected for a message that cannot be used."""
        part = self.parts[topic]
        stamp = header_stamp(msg)
        try:
            values = part.decode(msg)
            part.stream.admit(now if stamp is None else stamp, now)
        except Rejected as exc:
            self.drops[f"{topic}: {exc.reason}"] += 1
            if exc.reason == "invalid":
                part.invalid = str(exc)
                part.stream.arrival = now
            raise
        part.values, part.invalid = values, ""
        if not self.lockstep:
            return None
        part.queue.append((stamp, values))
        return self._complete()

    def _complete(self) -> Assembled | None:
        """Lockstep: the oldest state every stream has a message for, if there is one."""
        parts = list(self.parts.values())
        while all(p.queue for p in parts):
            heads = [p.queue[0][0] for p in parts if p.queue[0][0] is not None]
            stamp = max(heads, default=None)
            if any(h != stamp for h in heads):  # a stream skipped this state: drop what others had of it
                for p in parts:
                    if p.queue[0][0] is not None and p.queue[0][0] < stamp:
                        p.queue.popleft()
                        self.drops[f"{p.topic}: incomplete_state"] += 1
                continue
            values = np.empty(self.dim)
            for p in parts:
                values[p.index] = p.queue.popleft()[1]
            stamp = max(p.stream.stamp for p in parts) if stamp is None else stamp
            if stamp > self.emitted:
                self.emitted = stamp
                return Assembled(values, stamp)
        return None

    def _values(self) -> np.ndarray:
        out = np.empty(self.dim)
        for p in self.parts.values():
            out[p.index] = p.values
        return out

    def assemble(self, now: int) -> Assembled | Unusable:
        """Realtime: the observation from every stream's latest part, or why there is none."""
        for p in self.parts.values():
            if p.invalid:
                return Unusable(p.topic, "invalid", p.invalid)
            age = p.stream.age_ns(now)
            if age is None:
                return Unusable(p.topic, "missing", f"{p.topic}: no message yet")
            if age > p.max_age_ns:
                return Unusable(p.topic, "stale", f"{p.topic}: last message {age / 1e6:.0f} ms old "
                                f"(max age {p.max_age_ns / 1e6:.0f} ms)")
        return Assembled(self._values(), max(p.stream.stamp for p in self.parts.values()))

    def next_deadline(self, now: int) -> int | None:
        """When, without new messages, the next stream still fresh at `now` turns stale (None: none is)."""
        due = [p.stream.arrival + p.max_age_ns for p in self.parts.values()
               if p.stream.arrival is not None and not p.invalid and p.stream.arrival + p.max_age_ns >= now]
        return min(due) if due else None
