"""`nfhiql bag2data`: rosbag2 recordings → an OGBench-layout dataset, with the pure-Python `rosbags`
package (no ROS install needed): bag directories or single .mcap/.db3 files, zstd-compressed or not.

Each bag is converted on its own (episodes never span bags), in bounded memory:

1. Stream, in log-time order: every message on a mapped topic is deserialized once, stamped
   (header stamp or log time, per the spec; a stamp may never decrease within a topic), its values
   extracted (`nfhiql_core.interface.extract`) and appended to that topic's on-disk `SpillArray`s. Silences longer
   than `episodes.max_gap_s` and episode markers are noted. Memory: one message and one block of
   rows per topic, whatever the bag's size.
2. Cut episodes: each marker starts an episode (data before the first marker is pre-roll and
   dropped); a silence on any topic ends one (overlapping silences count once; a silence that
   holds a marker is that marker's cut).
3. Resample each episode on the control-rate grid t_k = t_start + k / rate_hz, from the first
   instant every topic has a sample (a topic with its own, longer tolerance_s: that much longer
   before) to the last instant every topic still has one. `zoh` takes each topic's latest sample
   stamped at or before t_k + its tolerance_s (its own, else the spec's); `linear` interpolates between
   the samples around t_k (pose quaternions renormalised). Rows are computed a block at a time from
   the samples that block needs.
4. Stream observations/actions/terminals (OGBench's raw layout: terminals = 1 at each episode's
   last row) into OUT.npz, and write the sidecar OUT.npz.json: the spec, per-topic counts, rates and
   gaps, the episodes and each bag's sha256 checksums.
"""
from __future__ import annotations

import functools
import math
import tempfile
from bisect import bisect_right
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from tqdm import tqdm

from nfhiql_core.atomic_io import ensure_writable, save_json
from nfhiql_core.bags.spill import SpillArray, write_npz
from nfhiql_core.checksums import sha256_file
from nfhiql_core.config import to_dict
from nfhiql_core.data.dataset import Dataset
from nfhiql_core.errors import BagError
from nfhiql_core.interface.extract import ExtractError, deserializer, make_decoder, one_line, stamp_getter, value_fields
from nfhiql_core.interface.spec import QUATERNION, FeatureMap, FieldSpec, InterfaceSpec, load_spec

BLOCK_ROWS = 1024  # grid rows resampled at a time
SIDECAR_SUFFIX = ".json"  # OUT.npz → OUT.npz.json
_PROGRESS_EVERY = 4096  # messages between progress-bar updates


@functools.lru_cache(maxsize=1)
def typestore():
    """rosbags' ROS 2 Kilted type store (the latest ROS 2 store on older rosbags)."""
    from rosbags.typesys import Stores, get_typestore

    store = getattr(Stores, "ROS2_KILTED", None) or Stores.ROS2_JAZZY
    return get_typestore(store)


def sidecar_path(output: str | Path) -> Path:
    """Where the sidecar of `output` goes."""
    return Path(f"{output}{SIDECAR_SUFFIX}")


class _Stream:
    """One mapped topic: its stamps and extracted values on disk, and running statistics."""

    def __init__(self, index: int, topic: str, fields: list[FieldSpec], reader, spec: InterfaceSpec, tmpdir: Path):
        self.topic, self.msgtype, self.fields = topic, fields[0].type, fields
        header = spec.time_source == "header" and stamp_getter(reader.typestore.types[self.msgtype]) is not None
        self.decode = make_decoder(fields, reader.typestore.types[self.msgtype], reader.deserialize, header,
                                   align_quaternions=spec.interpolation == "linear")
        self.stamp_field = "header.stamp" if header else "log time"
        dims = [f.raw_dim for f in fields]
        self.slices = [slice(a, a + d) for a, d in zip(np.cumsum([0] + dims[:-1]), dims)]
        self.columns = [name for f in fields for name in value_fields(f)]  # for error messages
        self.quaternions = [np.array([sl.start + f.names.index(c) for c in QUATERNION])
                            for f, sl in zip(fields, self.slices) if f.has_quaternion]
        self.times = SpillArray(tmpdir / f"{index}.t", np.int64)
        self.values = SpillArray(tmpdir / f"{index}.v", np.float64, sum(dims))
        self.max_gap_ns = int(spec.episodes.max_gap_s * 1e9)
        self.tolerance_ns = spec.tolerance_ns(topic)  # zoh: how late a sample may be and still count for a row
        self.count = self.header_stamps = 0
        self.first = self.last = self.longest_gap = self.silent_ns = 0
        self.gaps: list[tuple[int, int]] = []  # (last stamp before, first stamp after) a silence

    def add(self, raw: bytes, log_ns: int) -> None:
        """Decode, stamp, check and store one message (the hot path of the conversion)."""
        t, values = self.decode(raw)
        if t:
            self.header_stamps += 1
        else:  # no header, a zero stamp, or time_source: log
            t = log_ns
        if self.count:
            gap = t - self.last
            if gap < 0:
                raise ExtractError(self.stamp_field, f"stamps go backwards ({t} ns after {self.last} ns; "
                                                     "they must not decrease within a topic)")
            if gap > self.max_gap_ns:
                self.gaps.append((self.last, t))
                self.silent_ns += gap
            if gap > self.longest_gap:
                self.longest_gap = gap
        else:
            self.first = t
        self.last = t
        self.values.append(values)
        self.times.append(t)
        self.count += 1

    def stats(self, t0: int) -> dict:
        """Counts, the rate outside silences longer than max_gap_s, gaps and where stamps came from."""
        span = (self.last - self.first - self.silent_ns) * 1e-9
        return {"type": self.msgtype, "messages": self.count,
                "rate_hz": round((self.count - 1 - len(self.gaps)) / span, 3) if span > 0 else None,
                "first_s": round((self.first - t0) * 1e-9, 6), "last_s": round((self.last - t0) * 1e-9, 6),
                "longest_gap_s": round(self.longest_gap * 1e-9, 6), "gaps_over_max": len(self.gaps),
                "stamps": "header" if self.header_stamps == self.count else
                          "log" if not self.header_stamps else f"header ({self.header_stamps}), log time (rest)"}


class _Markers:
    """The episode-marker topic: only the times of its messages."""

    def __init__(self, topic: str, msgtype: str, reader, spec: InterfaceSpec):
        self.topic = topic
        self.stamp = stamp_getter(reader.typestore.types[msgtype]) if spec.time_source == "header" else None
        self.decode = deserializer(reader.deserialize, msgtype)
        self.times: list[int] = []
        self.count = 0

    def add(self, raw: bytes, log_ns: int) -> None:
        self.times.append((self.stamp(self.decode(raw)) if self.stamp else 0) or log_ns)
        self.count += 1


@dataclass
class _Bag:
    """What pass 1 learned about one bag."""

    path: Path
    streams: list[_Stream]
    markers: _Markers | None
    info: dict
    t0: int = 0  # earliest stamp (times in messages are relative to it)


@dataclass
class Conversion:
    """The result of `bag2data`: output paths and the sidecar's content."""

    output: Path
    sidecar: Path
    summary: dict = field(default_factory=dict)

    def report(self) -> str:
        """A human-readable report: bags, topics, episodes, output."""
        s = self.summary
        lines = []
        for bag in s["bags"]:
            compression = f" + {bag['compression']}" if bag["compression"] else ""
            lines.append(f"bag {bag['path']}: {bag['storage']}{compression}, {bag['messages']} messages, "
                         f"{bag['duration_s']:.1f} s")
            lines.append(f"  {'topic':<28} {'type':<36} {'messages':>9} {'rate Hz':>9} {'longest gap s':>14}  stamps")
            for topic, t in bag["topics"].items():
                rate = "-" if t["rate_hz"] is None else f"{t['rate_hz']:.2f}"
                lines.append(f"  {topic:<28} {t['type']:<36} {t['messages']:>9} {rate:>9} "
                             f"{t['longest_gap_s']:>14.3f}  {t['stamps']}")
            eps = [e for e in s["episodes"] if e["bag"] == bag["path"]]
            lengths = [e["rows"] for e in eps]
            lines.append(f"  episodes: {len(eps)} (rows min/mean/max {min(lengths)}/{np.mean(lengths):.1f}/"
                         f"{max(lengths)}), cut by " + ", ".join(f"{k} {v}" for k, v in bag["cuts"].items()))
        lines.append(f"wrote {self.output}: {s['rows']} rows, {len(s['episodes'])} episodes, observation "
                     f"{len(s['observation_names'])}-D, action {len(s['action_names'])}-D at "
                     f"{s['spec']['rate_hz']:g} Hz ({s['spec']['interpolation']}); sidecar {self.sidecar}")
        return "\n".join(lines)


def bag2data(bags: Sequence[str | Path], spec_path: str | Path, output: str | Path, overrides: Sequence[str] = (),
             force: bool = False, progress: bool = True) -> Conversion:
    """Convert `bags` with the spec at `spec_path` into `output` (.npz) and its sidecar."""
    spec = load_spec(spec_path, overrides)
    output = ensure_writable(output, force)
    sidecar = ensure_writable(sidecar_path(output), force)
    if not bags:
        raise BagError("no bag given")
    output.parent.mkdir(parents=True, exist_ok=True)
    summary: dict = {"format": "nfhiql bag2data 1", "spec_file": str(spec_path), "spec": to_dict(spec),
                     "observation_names": spec.observation_names, "action_names": spec.action_names,
                     "bags": [], "episodes": []}
    with tempfile.TemporaryDirectory(prefix=".bag2data-", dir=output.parent) as tmp:
        out = _Output(Path(tmp), spec.observation_names, spec.action_names)
        for i, path in enumerate(bags):
            bag = _read_bag(Path(path), spec, Path(tmp) / f"bag{i}", progress)
            cuts = _convert_bag(bag, spec, out, summary["episodes"])
            summary["bags"].append({**bag.info, "cuts": cuts, "topics": {
                s.topic: s.stats(bag.t0) for s in bag.streams}, "sha256": _checksums(bag.path)})
            for s in bag.streams:
                s.times.close()
                s.values.close()
        summary["rows"] = len(out.observations)
        # The checks `nfhiql train` applies, here: a conversion that could not train fails now, naming its bags.
        Dataset.from_arrays(**{k: a.memmap() for k, a in out.arrays().items()}, source=", ".join(map(str, bags)))
        write_npz(output, out.arrays())
        out.close()
    save_json(sidecar, summary)
    return Conversion(output, sidecar, summary)


# ---- pass 1: stream the bag --------------------------------------------------------------------

def _open_reader(path: Path):
    from rosbags.highlevel import AnyReader

    if not path.exists():
        raise BagError(f"{path}: no such bag (expected a rosbag2 directory, .mcap or .db3 file)")
    reader = AnyReader([path], default_typestore=typestore())
    try:
        reader.open()
    except Exception as exc:  # whatever rosbags raises on a truncated or corrupt file
        raise BagError(f"{path}: not a readable rosbag2 recording ({one_line(exc)})") from None
    return reader


def _field_keys(spec: InterfaceSpec) -> list[tuple[str, FieldSpec]]:
    return ([(f"observation[{i}]", f) for i, f in enumerate(spec.observation)]
            + [(f"action.fields[{i}]", f) for i, f in enumerate(spec.action.fields)])


def _check_topics(path: Path, spec: InterfaceSpec, topics: dict) -> None:
    """Every spec topic is in the bag, with the spec's type and some messages."""
    listing = ", ".join(f"{name} [{info.msgtype}]" for name, info in sorted(topics.items())) or "no topics"
    wanted = [(key, f.topic, f.type) for key, f in _field_keys(spec)]
    if spec.episodes.marker_topic:
        wanted.append(("episodes.marker_topic", spec.episodes.marker_topic, None))
    for key, topic, msgtype in wanted:
        if topic not in topics:
            raise BagError(f"{path}: topic {topic} ({key}) is not in the bag; it has: {listing}")
        if msgtype is not None and topics[topic].msgtype != msgtype:
            raise BagError(f"{path}: topic {topic} ({key}.type): the spec says {msgtype}, "
                           f"the bag has {topics[topic].msgtype}")
        if not topics[topic].msgcount:
            raise BagError(f"{path}: topic {topic} ({key}): no messages in the bag")


def _read_bag(path: Path, spec: InterfaceSpec, tmpdir: Path, progress: bool) -> _Bag:
    """Pass 1: stream every message of the mapped topics into per-topic spill files."""
    tmpdir.mkdir()
    reader = _open_reader(path)
    try:
        topics = reader.topics
        _check_topics(path, spec, topics)
        streams = {topic: _Stream(i, topic, [f for f in spec.fields if f.topic == topic], reader, spec, tmpdir)
                   for i, topic in enumerate(spec.topics)}
        marker_topic = spec.episodes.marker_topic
        markers = _Markers(marker_topic, topics[marker_topic].msgtype, reader, spec) if marker_topic else None
        targets = {**streams, **({marker_topic: markers} if markers else {})}
        connections = [c for c in reader.connections if c.topic in targets]
        _stream_messages(path, reader, connections, targets, progress)
        first = min(s.first for s in streams.values())
        info = {"path": str(path), "storage": _storage(path), "compression": _compression(reader),
                "messages": reader.message_count, "duration_s": reader.duration * 1e-9}
    finally:
        reader.close()
    return _Bag(path, list(streams.values()), markers, info, first)


def _stream_messages(path: Path, reader, connections: list, targets: dict, progress: bool) -> None:
    target_of = {c.id: targets[c.topic] for c in connections}
    messages = reader.messages(connections=connections)
    total = sum(c.msgcount for c in connections)
    done = 0
    with tqdm(total=total, unit="msg", unit_scale=True, desc=f"bag2data {path.name}", disable=not progress,
              mininterval=0.5) as bar:
        while True:
            try:
                connection, log_ns, raw = next(messages)
            except StopIteration:
                break
            except Exception as exc:  # the storage layer's errors on a truncated or corrupt file
                raise BagError(f"{path}: corrupt or truncated storage, unreadable after {done} messages "
                               f"({one_line(exc)})") from None
            target = target_of[connection.id]
            try:
                target.add(raw, log_ns)
            except ExtractError as exc:
                raise BagError(f"{path}: topic {connection.topic} {exc} (message {target.count})") from None
            done += 1
            if done % _PROGRESS_EVERY == 0:
                bar.update(_PROGRESS_EVERY)
        bar.update(done - bar.n)


def _storage(path: Path) -> str:
    names = [p.name for p in path.iterdir()] if path.is_dir() else [path.name]
    return "mcap" if any(".mcap" in n for n in names) else "sqlite3"


def _compression(reader) -> str:
    inner = reader.readers[0]
    mode, fmt = inner.compression_mode, inner.compression_format
    return f"{fmt} ({mode})" if mode else ""


def _checksums(path: Path) -> dict[str, str]:
    """sha256 of each file of the bag."""
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    return {file.name: sha256_file(file) for file in files}


# ---- pass 2: episodes and resampling -----------------------------------------------------------

def _cuts(bag: _Bag, tolerance_ns: int) -> tuple[list[int], int]:
    """Episode start times (sorted) and how many of them come from silences.

    A silence's episode starts `tolerance_ns` before the silent topic's first sample after it, so
    the other topics' samples from that instant belong to the new episode.
    """
    silences = sorted(g for s in bag.streams for g in s.gaps)
    merged: list[list[int]] = []
    for before, after in silences:
        if merged and before <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], after)
        else:
            merged.append([before, after])
    markers = sorted(bag.markers.times) if bag.markers else []

    def holds_marker(before: int, after: int) -> bool:
        i = bisect_right(markers, before)
        return i < len(markers) and markers[i] <= after

    from_gaps = [after - tolerance_ns for before, after in merged if not holds_marker(before, after)]
    return sorted(set(markers) | set(from_gaps)), len(from_gaps)


def _segments(bag: _Bag, tolerance_ns: int) -> Iterator[tuple[int, int, str]]:
    """(start, stop, what started it) of each episode; stop is exclusive."""
    cuts, _ = _cuts(bag, tolerance_ns)
    markers = set(bag.markers.times) if bag.markers else set()
    if markers:  # before the first marker: pre-roll, not an episode
        cuts = cuts[cuts.index(min(markers)):]
    else:
        cuts = [-(2 ** 63), *cuts]
    for start, stop in zip(cuts, [*cuts[1:], 2 ** 63 - 1]):
        yield start, stop, "marker" if start in markers else "gap" if start > -(2 ** 63) else "bag start"


class _Output:
    """Output rows spilled to disk, and the episode lengths."""

    def __init__(self, tmpdir: Path, obs_names: list[str], act_names: list[str]):
        self.observations = SpillArray(tmpdir / "observations", np.float32, len(obs_names))
        self.actions = SpillArray(tmpdir / "actions", np.float32, len(act_names))
        self.terminals = SpillArray(tmpdir / "terminals", np.float32)

    def add(self, observations: np.ndarray, actions: np.ndarray, last: bool) -> None:
        self.observations.extend(observations)
        self.actions.extend(actions)
        terminals = np.zeros(len(observations), np.float32)
        terminals[-1] = float(last)
        self.terminals.extend(terminals)

    def arrays(self) -> dict[str, SpillArray]:
        return {"observations": self.observations, "actions": self.actions, "terminals": self.terminals}

    def close(self) -> None:
        for array in self.arrays().values():
            array.close()


def _convert_bag(bag: _Bag, spec: InterfaceSpec, out: _Output, episodes: list[dict]) -> dict:
    """Pass 2: resample every episode of `bag` into `out`; returns how episodes were cut."""
    tolerance = spec.tolerance_ns()
    _, from_gaps = _cuts(bag, tolerance)
    counts = {"marker": len(bag.markers.times) if bag.markers else 0, "gap": from_gaps}
    for start, stop, how in _segments(bag, tolerance):
        rows = _convert_episode(bag, spec, out, start, stop, how, len(episodes))
        episodes.append({"bag": str(bag.path), "index": len(episodes), "started_by": how,
                         "start_s": round((rows[0] - bag.t0) * 1e-9, 6), "rows": rows[1]})
    return counts


def _convert_episode(bag: _Bag, spec: InterfaceSpec, out: _Output, start: int, stop: int, how: str,
                     number: int) -> tuple[int, int]:
    """Resample one episode [start, stop) into `out`; returns (t_start, rows)."""
    ranges = [(s.times.searchsorted(start), s.times.searchsorted(stop)) for s in bag.streams]
    where = f"episode {number} (started by {how} {(max(start, bag.t0) - bag.t0) * 1e-9:.3f} s into the bag)"
    for s, (i0, i1) in zip(bag.streams, ranges):
        if i0 == i1:
            raise BagError(f"{bag.path}: {where}: topic {s.topic} field {s.fields[0].label}: no messages "
                           "in this episode (empty episode)")
    tol = spec.tolerance_ns()  # the spec's own: of the episode's end
    t_start = max(s.times.item(i0) - (s.tolerance_ns - tol) for s, (i0, _) in zip(bag.streams, ranges))
    t_end = _episode_end(bag, ranges) + tol
    n = math.floor((t_end - t_start) / spec.period_ns + 1e-6) + 1 if t_end >= t_start else 0
    if n < 2:
        spans = [s.times.item(i1 - 1) - s.times.item(i0) for s, (i0, i1) in zip(bag.streams, ranges)]
        s = bag.streams[int(np.argmin(spans))]
        raise BagError(f"{bag.path}: {where}: topic {s.topic} field {s.fields[0].label}: its messages span "
                       f"{min(spans) * 1e-9:.3f} s, {n} row(s) at {spec.rate_hz:g} Hz; need >= 2 rows for a "
                       "transition (empty episode)")
    delta = bool(spec.action.delta_of)
    for k0 in range(0, n, BLOCK_ROWS):
        k1 = min(n, k0 + BLOCK_ROWS)
        extra = delta and k1 < n  # delta actions need the next row's observation
        grid = t_start + np.round(np.arange(k0, k1 + extra) * spec.period_ns).astype(np.int64)
        samples = [_sample(bag, s, i0, i1, grid, spec) for s, (i0, i1) in zip(bag.streams, ranges)]
        observations = _assemble(bag, spec.observation, samples)
        if delta:
            actions = _delta_actions(spec, observations)[: k1 - k0]
            observations = observations[: k1 - k0]
        else:
            actions = _assemble(bag, spec.action.fields, samples)
        out.add(observations, actions, last=k1 == n)
    return t_start, n


def _episode_end(bag: _Bag, ranges: list[tuple[int, int]]) -> int:
    """The episode's last instant: no later than any topic's last sample plus its max age (declared
    `max_age_s`, or its median sample interval: a value one sample period old is what zero-order hold
    uses between samples anyway), and no later than the latest sample of all."""
    ends, last = [], 0
    for s, (i0, i1) in zip(bag.streams, ranges):
        declared = max(f.max_age_s for f in s.fields)
        if declared > 0:
            age = round(declared * 1e9)
        else:
            times = s.times.read(max(i0, i1 - 1001), i1)  # the end of the episode is what matters
            age = int(np.median(np.diff(times))) if len(times) > 1 else 0
        t_last = s.times.item(i1 - 1)
        ends.append(t_last + age)
        last = max(last, t_last)
    return min(min(ends), last)


def _sample(bag: _Bag, s: _Stream, i0: int, i1: int, grid: np.ndarray, spec: InterfaceSpec) -> np.ndarray:
    """Values of stream `s` (samples [i0, i1) of the episode) at the grid times."""
    tol = s.tolerance_ns
    j0 = max(i0, s.times.searchsorted(grid[0] + tol, "right") - 1)
    j1 = min(i1, s.times.searchsorted(grid[-1] + tol, "right") + 1)
    times, values = s.times.read(j0, j1), s.values.read(j0, j1)
    bad = ~np.isfinite(values)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise BagError(f"{bag.path}: topic {s.topic} field {s.columns[col]}: NaN/missing value "
                       f"(message {j0 + row})")
    if spec.interpolation == "zoh":
        return values[np.searchsorted(times, grid + tol, "right") - 1]
    x, xs = (times - grid[0]).astype(np.float64), (grid - grid[0]).astype(np.float64)
    out = np.column_stack([np.interp(xs, x, values[:, c]) for c in range(values.shape[1])])
    for cols in s.quaternions:
        out[:, cols] /= np.linalg.norm(out[:, cols], axis=1, keepdims=True)
    return out


def _assemble(bag: _Bag, fields: Sequence[FieldSpec], samples: list[np.ndarray]) -> np.ndarray:
    """Concatenate the fields' values (`FieldSpec.features`) from the per-stream samples."""
    index = {s.topic: i for i, s in enumerate(bag.streams)}
    raw = []
    for f in fields:
        i = index[f.topic]
        stream = bag.streams[i]
        raw.append(samples[i][:, stream.slices[stream.fields.index(f)]])
    return FeatureMap(fields)(np.concatenate(raw, axis=1))


def _delta_actions(spec: InterfaceSpec, observations: np.ndarray) -> np.ndarray:
    """(next row - row) of the `delta_of` observation fields, times delta_scale; 0 for the last row."""
    ends = np.cumsum([0] + [f.dim for f in spec.observation])
    start = {f.label: (ends[i], ends[i + 1]) for i, f in enumerate(spec.observation)}
    cols = np.concatenate([np.arange(*start[label]) for label in spec.action.delta_of])
    diff = np.zeros((len(observations), len(cols)))
    diff[:-1] = (observations[1:, cols] - observations[:-1, cols]) * spec.action.delta_scale
    return diff
