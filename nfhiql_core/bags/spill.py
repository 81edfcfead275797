"""Append-only arrays kept on disk, and .npz files assembled from them, in bounded memory.

`nfhiql bag2data` must convert bags larger than RAM: per-topic samples and output rows go through
`SpillArray`s (rows buffered in memory `block` at a time, then appended to a raw file), are read
back in slices, and `write_npz` streams them into the archive without loading them whole.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np

from nfhiql_core.atomic_io import atomic_open

DEFAULT_BLOCK = 8192  # rows buffered in memory before they are appended to the file


class SpillArray:
    """A growing (n,) or (n, width) array of `dtype` in a raw file at `path` (created empty)."""

    def __init__(self, path: str | os.PathLike, dtype: np.dtype | type, width: int | None = None,
                 block: int = DEFAULT_BLOCK):
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self.row_shape: tuple[int, ...] = () if width is None else (width,)
        self._buffer = np.empty((block, *self.row_shape), dtype=self.dtype)
        self._pending = 0
        self._stored = 0
        self._file = open(self.path, "wb")
        self._row_bytes = self.dtype.itemsize * (width or 1)

    def __len__(self) -> int:
        return self._stored + self._pending

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.row_shape)

    def append(self, row) -> None:
        """Append one row (a scalar for 1-D arrays)."""
        self._buffer[self._pending] = row
        self._pending += 1
        if self._pending == len(self._buffer):
            self.flush()

    def extend(self, rows: np.ndarray) -> None:
        """Append many rows."""
        self.flush()
        self._file.write(np.ascontiguousarray(rows, dtype=self.dtype).tobytes())
        self._stored += len(rows)

    def flush(self) -> None:
        """Write the buffered rows to the file (reads see every appended row either way)."""
        if self._pending:
            self._file.write(self._buffer[: self._pending].tobytes())
            self._stored += self._pending
            self._pending = 0
        self._file.flush()

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) as a new in-memory array."""
        self.flush()
        start, stop = max(0, start), min(stop, self._stored)
        count = max(0, stop - start)
        return np.fromfile(self.path, dtype=self.dtype, count=count * (self._row_bytes // self.dtype.itemsize),
                           offset=start * self._row_bytes).reshape(count, *self.row_shape)

    def memmap(self) -> np.ndarray:
        """Every row as a read-only memory map of the file (nothing loaded)."""
        self.flush()
        if self._stored == 0:
            return np.empty((0, *self.row_shape), dtype=self.dtype)
        return np.memmap(self.path, dtype=self.dtype, mode="r", shape=(self._stored, *self.row_shape))

    def item(self, index: int):
        """One row."""
        return self.read(index, index + 1)[0]

    def searchsorted(self, value, side: str = "left") -> int:
        """np.searchsorted over a sorted 1-D array, through a short-lived memory map
        (only the O(log n) pages the search touches are read)."""
        self.flush()
        if not self._stored:
            return 0
        mapped = np.memmap(self.path, dtype=self.dtype, mode="r", shape=(self._stored,))
        try:
            return int(np.searchsorted(mapped, value, side))
        finally:
            del mapped

    def chunks(self, rows: int = 65536) -> Iterator[np.ndarray]:
        """The whole array, `rows` rows at a time."""
        for start in range(0, len(self), rows):
            yield self.read(start, start + rows)

    def close(self) -> None:
        self._file.close()


def write_npz(path: str | os.PathLike, arrays: Mapping[str, SpillArray], compress: bool = True) -> None:
    """Atomically write SpillArrays into an .npz (each entry a standard .npy), chunk by chunk."""
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with atomic_open(path, "wb") as f, zipfile.ZipFile(f, "w", compression=method, allowZip64=True) as archive:
        for key, array in arrays.items():
            array.flush()
            with archive.open(f"{key}.npy", "w", force_zip64=True) as entry:
                header = {"descr": np.lib.format.dtype_to_descr(array.dtype), "fortran_order": False,
                          "shape": array.shape}
                np.lib.format.write_array_header_1_0(entry, header)
                for chunk in array.chunks():
                    entry.write(chunk.tobytes())
