"""OGBench-format offline datasets in the compact layout HIQL trains on.

Raw OGBench files store every observation of each trajectory, with `terminals` = 1 at each
trajectory's final observation. The compact layout (what `ogbench.load_dataset(...,
compact_dataset=True)` returns) adds `valids` = 0 at those final observations, so that
`observations[i + 1]` is the next observation of every valid index i, and sets `terminals` = 1 at
both the last valid index and the final observation. Both layouts load to the same `Dataset`.

Datasets larger than RAM live in the memory-mapped layout (`nfhiql dataset convert`): a directory of
uncompressed `.npy` files (observations, actions, valids: the compact layout's arrays) with a
`dataset.json` manifest, opened with `np.load(mmap_mode="r")`. Training reads only the rows it samples,
with pread (`Dataset.rows`): pages of a mapping count in a process's resident memory once touched, and
random sampling touches them all. Its contents are validated once, by the conversion; loading checks
shapes, dtypes and the trajectory structure. Format: docs/design/scaling.md.
"""
from __future__ import annotations

import functools
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from nfhiql_core.checksums import sha256_file
from nfhiql_core.errors import DatasetError

OGBENCH_DATA_DIR = Path(".ogbench") / "data"  # relative to the home directory
_REQUIRED_KEYS = ("observations", "actions", "terminals")
_NDIMS = {"observations": 2, "actions": 2, "terminals": 1, "valids": 1}
NPY_FORMAT = "nfhiql-npy-dataset/1"
NPY_MANIFEST = "dataset.json"
NPY_ARRAYS = {"observations": np.dtype(np.float32), "actions": np.dtype(np.float32), "valids": np.dtype(np.bool_)}


@dataclass(frozen=True)
class RowFile:
    """Rows of a C-order `.npy` file, read with pread (through the page cache, never mapped)."""

    path: str
    offset: int  # bytes before the first row (the .npy header)
    dtype: np.dtype
    row_shape: tuple[int, ...]

    @classmethod
    def of(cls, array: np.memmap) -> "RowFile":
        """The file behind an array `np.load(path, mmap_mode="r")` returned."""
        return cls(array.filename, array.offset, array.dtype, array.shape[1:])

    def read(self, idxs: np.ndarray) -> np.ndarray:
        """Rows `idxs`, as a new (len(idxs), *row_shape) array."""
        size = self.dtype.itemsize * int(np.prod(self.row_shape))
        fd = os.open(self.path, os.O_RDONLY)
        try:
            data = bytearray().join([os.pread(fd, size, self.offset + i * size) for i in idxs.tolist()])
        finally:
            os.close(fd)
        return np.frombuffer(data, self.dtype).reshape(len(idxs), *self.row_shape)


@dataclass(frozen=True, eq=False)
class Dataset:
    """A validated compact dataset; arrays are read-only (memory-mapped from the `.npy` layout).

    `trajectory_ends(i)` is the last valid index of the trajectory holding i: trajectory goals are
    capped there, exactly as OGBench's `terminal_locs` search caps them. The per-row lookups the
    sampler needs are binary searches over the trajectories' final indices, so nothing of the
    dataset's length is held in memory beside its arrays.
    """

    observations: np.ndarray  # (N, obs_dim) float32
    actions: np.ndarray  # (N, act_dim) float32
    valids: np.ndarray  # (N,) bool
    source: str
    row_files: Mapping[str, RowFile] = field(default_factory=dict, repr=False)  # arrays `rows` reads by pread

    def __len__(self) -> int:
        return len(self.observations)

    @property
    def obs_dim(self) -> int:
        """Observation dimension."""
        return self.observations.shape[1]

    @property
    def action_dim(self) -> int:
        """Action dimension."""
        return self.actions.shape[1]

    @functools.cached_property
    def final_indices(self) -> np.ndarray:
        """Index of each trajectory's final (invalid) observation, in order."""
        return _read_only(np.flatnonzero(~self.valids))

    @property
    def num_trajectories(self) -> int:
        """Number of trajectories."""
        return len(self.final_indices)

    @functools.cached_property
    def valid_indices(self) -> np.ndarray:
        """Sorted int64 indices i where (i -> i+1) is a real transition."""
        return _read_only(np.flatnonzero(self.valids))

    @functools.cached_property
    def traj_ends(self) -> np.ndarray:
        """(N,) int64: `trajectory_ends` of every index."""
        return _read_only(self.trajectory_ends(np.arange(len(self))))

    @property
    def num_valid(self) -> int:
        """Number of valid indices."""
        return len(self) - self.num_trajectories

    def rows(self, key: str, idxs: np.ndarray) -> np.ndarray:
        """`getattr(self, key)[idxs]` for 1-D integer `idxs`, read from the file of a memory-mapped layout."""
        file = self.row_files.get(key)
        return getattr(self, key)[idxs] if file is None else file.read(idxs)

    def nth_valid(self, k: np.ndarray) -> np.ndarray:
        """`valid_indices[k]`, without that array: the k-th valid index is k plus the number of trajectories
        that end before it, i.e. whose final index f_j has f_j − j ≤ k valid indices before it."""
        return k + np.searchsorted(self._valid_before_finals, k, side="right")

    def trajectory_ends(self, idxs: np.ndarray) -> np.ndarray:
        """Last valid index of the trajectory holding each of `idxs`."""
        return self.final_indices[np.searchsorted(self.final_indices, idxs)] - 1

    @functools.cached_property
    def _valid_before_finals(self) -> np.ndarray:
        """Number of valid indices before each trajectory's final index."""
        return self.final_indices - np.arange(self.num_trajectories)

    @classmethod
    def from_arrays(
        cls,
        observations: np.ndarray,
        actions: np.ndarray,
        terminals: np.ndarray,
        valids: np.ndarray | None = None,
        source: str = "<arrays>",
    ) -> "Dataset":
        """Validate raw (`valids` None) or compact arrays and build a Dataset.

        Raises DatasetError with a one-line message naming `source` and the offending field.
        """
        arrays = {"observations": observations, "actions": actions, "terminals": terminals}
        if valids is not None:
            arrays["valids"] = valids
        arrays = {k: _as_float32(source, k, v) for k, v in arrays.items()}
        _check_lengths(source, arrays)
        for key, value in arrays.items():
            _check_finite(source, key, value)
        flags = {k: _as_flags(source, k, arrays[k]) for k in ("terminals", "valids") if k in arrays}
        if "valids" in flags:
            valid = _compact_valids(source, flags["terminals"], flags["valids"])
        else:
            valid = _raw_valids(source, flags["terminals"])
        return cls._frozen(arrays["observations"], arrays["actions"], valid, source)

    @classmethod
    def _frozen(
        cls, observations: np.ndarray, actions: np.ndarray, valids: np.ndarray, source: str,
        row_files: Mapping[str, RowFile] | None = None,
    ) -> "Dataset":
        """Build from checked arrays, exposing read-only views (callers' arrays stay writable)."""
        return cls(*(_read_only(a) for a in (observations, actions, valids)), source, dict(row_files or {}))

    def subset_trajectories(self, fraction: float, seed: int) -> "Dataset":
        """Keep a seeded random subset of whole trajectories (at least one), in original order (a copy in
        memory, also of a memory-mapped dataset)."""
        _check_fraction(self.source, fraction)
        if fraction == 1.0:
            return self
        n_traj = self.num_trajectories
        n_keep = max(1, int(round(fraction * n_traj)))
        selected = np.zeros(n_traj, dtype=bool)
        selected[np.random.default_rng(seed).choice(n_traj, size=n_keep, replace=False)] = True
        keep = selected[_trajectory_ids(self.valids)]
        return Dataset._frozen(self.observations[keep], self.actions[keep], self.valids[keep], self.source)


def resolve_dataset_path(name_or_path: str) -> Path:
    """Return an existing path (file or `.npy` layout directory) as is, else ~/.ogbench/data/<name>.npz or
    <name>-v0.npz."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    data_dir = Path.home() / OGBENCH_DATA_DIR
    candidates = [data_dir / f"{name_or_path}.npz", data_dir / f"{name_or_path}-v0.npz"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    tried = ", ".join(str(p) for p in [path, *candidates])
    raise DatasetError(f"{name_or_path}: dataset not found (tried {tried})")


def load_dataset(name_or_path: str, data_fraction: float = 1.0, seed: int = 0) -> Dataset:
    """Load, validate and optionally subsample (by whole trajectories) an OGBench-format .npz, or open a
    memory-mapped `.npy` layout directory."""
    path = resolve_dataset_path(name_or_path)
    _check_fraction(str(path), data_fraction)
    if path.is_dir():
        dataset = _open_npy_dir(path)
    else:
        dataset = Dataset.from_arrays(**_read_npz(path), source=str(path))
    return dataset.subset_trajectories(data_fraction, seed)


def read_manifest(path: str | Path) -> dict:
    """The `dataset.json` of a `.npy` layout directory; DatasetError (one line) if it is not one."""
    manifest_path = Path(path) / NPY_MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise DatasetError(f"{path}: not a dataset directory (no {NPY_MANIFEST}; convert an .npz with "
                           "`nfhiql dataset convert`)") from None
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{manifest_path}: unreadable ({_one_line(exc)})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != NPY_FORMAT:
        raise DatasetError(f"{manifest_path}: field 'format': expected {NPY_FORMAT!r}")
    if not isinstance(manifest.get("rows"), int):
        raise DatasetError(f"{manifest_path}: field 'rows': expected an integer")
    return manifest


def _open_npy_dir(path: Path) -> Dataset:
    """Memory-map a `.npy` layout directory, checking what can be checked without reading the arrays."""
    manifest, source = read_manifest(path), str(path)
    arrays = {}
    for key, dtype in NPY_ARRAYS.items():
        file = path / f"{key}.npy"
        try:
            array = np.load(file, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError:
            raise _fail(source, key, f"{file.name} is missing") from None
        except (OSError, ValueError) as exc:
            raise _fail(source, key, f"{file.name} is not a readable .npy file ({_one_line(exc)})") from None
        if array.dtype != dtype or array.ndim != _NDIMS[key]:
            raise _fail(source, key, f"expected a {_NDIMS[key]}-D {dtype} array, got {array.ndim}-D {array.dtype}")
        if len(array) != manifest["rows"]:
            raise _fail(source, key, f"length {len(array)} != the manifest's rows {manifest['rows']}")
        arrays[key] = array
    _check_valids(source, "valids", arrays["valids"])
    return Dataset._frozen(arrays["observations"], arrays["actions"], arrays["valids"], source,
                           {key: RowFile.of(arrays[key]) for key in ("observations", "actions")})


def dataset_sha256(path: str | Path) -> str:
    """What identifies a dataset's contents: an .npz file's sha256, or a `.npy` layout's manifest's (which
    holds each array's sha256)."""
    path = Path(path)
    return sha256_file(path / NPY_MANIFEST if path.is_dir() else path)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """Read the needed arrays of an .npz (extra keys ignored)."""
    if not zipfile.is_zipfile(path):
        raise DatasetError(f"{path}: not an .npz archive")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"{path}: not a readable .npz archive ({_one_line(exc)})") from None
    with archive:
        for key in _REQUIRED_KEYS:
            if key not in archive.files:
                present = ", ".join(archive.files) or "nothing"
                raise _fail(str(path), key, f"missing key (file has: {present})")
        keys = [*_REQUIRED_KEYS, *(["valids"] if "valids" in archive.files else [])]
        return {key: _read_key(path, archive, key) for key in keys}


def _read_key(path: Path, archive: np.lib.npyio.NpzFile, key: str) -> np.ndarray:
    try:
        return archive[key]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise _fail(str(path), key, f"unreadable ({_one_line(exc)})") from None


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _check_fraction(source: str, fraction: float) -> None:
    if not 0.0 < fraction <= 1.0:
        raise DatasetError(f"{source}: data_fraction must be in (0, 1], got {fraction}")


def _fail(source: str, field: str, message: str) -> DatasetError:
    return DatasetError(f"{source}: field '{field}': {message}")


def _as_float32(source: str, key: str, value: np.ndarray) -> np.ndarray:
    """Check ndim and numeric dtype; cast to float32 without copying when already float32."""
    value = np.asarray(value)
    if value.ndim != _NDIMS[key]:
        raise _fail(source, key, f"expected {_NDIMS[key]}-D array, got shape {value.shape}")
    if not (np.issubdtype(value.dtype, np.number) or value.dtype == np.bool_):
        raise _fail(source, key, f"expected a numeric array, got dtype {value.dtype}")
    return value.astype(np.float32, copy=False)


def _check_lengths(source: str, arrays: dict[str, np.ndarray]) -> None:
    n = len(arrays["observations"])
    for key, value in arrays.items():
        if len(value) != n:
            raise _fail(source, key, f"length {len(value)} != observations length {n}")


def _check_finite(source: str, key: str, value: np.ndarray, offset: int = 0) -> None:
    """DatasetError naming the first row with a NaN or Inf (rows of `value` count from `offset`)."""
    finite = np.isfinite(value)
    if finite.ndim > 1:
        finite = finite.all(axis=1)
    if not finite.all():
        raise _fail(source, key, f"NaN or Inf at index {offset + int(np.argmin(finite))}")


def _as_flags(source: str, key: str, value: np.ndarray) -> np.ndarray:
    bad = (value != 0) & (value != 1)
    if bad.any():
        first = int(np.argmax(bad))
        raise _fail(source, key, f"values must be 0 or 1, got {value[first]} at index {first}")
    return value.astype(bool)


def _raw_valids(source: str, terminals: np.ndarray) -> np.ndarray:
    """Raw layout: terminals mark each trajectory's final observation."""
    if not terminals.any():
        raise _fail(source, "terminals", "no terminal at all (trajectories never terminate)")
    if not terminals[-1]:
        last = int(np.flatnonzero(terminals)[-1])
        raise _fail(source, "terminals", f"data after the last terminal (index {last}) never terminates")
    _check_nonempty_trajectories(source, "terminals", ~terminals)
    return ~terminals


def _compact_valids(source: str, terminals: np.ndarray, valids: np.ndarray) -> np.ndarray:
    """Compact layout: valids = 0 at final observations; terminals at last valid index and final."""
    _check_valids(source, "valids", valids)
    final = ~valids
    expected = final | np.append(final[1:], True)
    mismatch = terminals != expected
    if mismatch.any():
        first = int(np.argmax(mismatch))
        raise _fail(
            source,
            "terminals",
            f"inconsistent with valids at index {first} (compact terminals must be 1 exactly at "
            "each trajectory's last valid index and final observation)",
        )
    return valids


def _check_valids(source: str, field: str, valids: np.ndarray) -> None:
    """Compact valids: each trajectory ends at an invalid index (the last index among them) after at least
    one valid transition."""
    final = ~valids
    if not final.any():
        raise _fail(source, field, "no invalid index at all (trajectories never terminate)")
    if not final[-1]:
        last = int(np.flatnonzero(final)[-1])
        raise _fail(source, field, f"data after the last trajectory end (index {last}) never terminates")
    _check_nonempty_trajectories(source, field, valids)


def _check_nonempty_trajectories(source: str, field: str, valid: np.ndarray) -> None:
    """Every trajectory needs at least one valid transition (no two final observations in a row)."""
    empty = ~valid & np.concatenate([[True], ~valid[:-1]])
    if empty.any():
        first = int(np.argmax(empty))
        raise _fail(source, field, f"trajectory ending at index {first} has no valid transition")


def _trajectory_ids(valid: np.ndarray) -> np.ndarray:
    """Trajectory number of every index (each trajectory ends at an invalid index)."""
    return np.searchsorted(np.flatnonzero(~valid), np.arange(len(valid)))


def _read_only(array: np.ndarray) -> np.ndarray:
    view = array.view()
    view.setflags(write=False)
    return view
