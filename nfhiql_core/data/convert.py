"""`nfhiql dataset convert`: an OGBench-format .npz (raw or compact) → the memory-mapped `.npy` layout.

Observations and actions are streamed from the archive in chunks (cast to float32 and checked finite on
the way), so a dataset larger than RAM converts too; the flags (N values) are read whole. The layout
is built in a directory beside the output and renamed into place once it loads.
"""
from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path
from typing import IO, Iterator

import numpy as np
from tqdm import tqdm

from nfhiql_core.atomic_io import check_output_dir, publish_dir, save_json, staging_dir
from nfhiql_core.checksums import sha256_file
from nfhiql_core.data.dataset import (
    _NDIMS,
    NPY_ARRAYS,
    NPY_FORMAT,
    NPY_MANIFEST,
    Dataset,
    _as_flags,
    _as_float32,
    _check_finite,
    _compact_valids,
    _fail,
    _one_line,
    _raw_valids,
    _read_key,
    load_dataset,
    resolve_dataset_path,
)
from nfhiql_core.errors import DatasetError

CHUNK_BYTES = 64 << 20  # rows read, checked and written at a time
_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def convert_npz(npz: str | os.PathLike, output_dir: str | os.PathLike, force: bool = False,
                progress: bool = True) -> Dataset:
    """Write `npz` as a `.npy` layout directory at `output_dir` and return it opened (memory-mapped)."""
    path, out = resolve_dataset_path(os.fspath(npz)), Path(output_dir)
    check_output_dir(out, force)
    if not zipfile.is_zipfile(path):
        raise DatasetError(f"{path}: not an .npz archive")
    source = str(path)
    with zipfile.ZipFile(path) as archive, np.load(path, allow_pickle=False) as npz_file:
        for key in ("observations", "actions", "terminals"):
            if key not in npz_file.files:
                raise _fail(source, key, f"missing key (file has: {', '.join(npz_file.files) or 'nothing'})")
        flags = {k: _as_flags(source, k, _as_float32(source, k, _read_key(path, npz_file, k)))
                 for k in ("terminals", "valids") if k in npz_file.files}
        if "valids" in flags and len(flags["valids"]) != len(flags["terminals"]):
            raise _fail(source, "valids", f"length {len(flags['valids'])} != terminals length "
                        f"{len(flags['terminals'])}")
        valids = (_compact_valids(source, flags["terminals"], flags["valids"]) if "valids" in flags
                  else _raw_valids(source, flags["terminals"]))
        tmp = staging_dir(out)
        try:
            shapes = {key: _copy_rows(archive, source, key, len(valids), tmp / f"{key}.npy", progress)
                      for key in ("observations", "actions")}
            np.save(tmp / "valids.npy", valids)
            save_json(tmp / NPY_MANIFEST, {
                "format": NPY_FORMAT, "rows": len(valids), "obs_dim": shapes["observations"][1],
                "action_dim": shapes["actions"][1], "trajectories": int((~valids).sum()),
                "arrays": {key: {"file": f"{key}.npy", "sha256": sha256_file(tmp / f"{key}.npy")}
                           for key in NPY_ARRAYS},
                "source": {"path": source, "sha256": sha256_file(path)}})
            load_dataset(str(tmp))  # what training will check, before publishing
            publish_dir(tmp, out, force)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return load_dataset(str(out))


def _copy_rows(archive: zipfile.ZipFile, source: str, key: str, rows: int, target: Path,
               progress: bool) -> tuple[int, ...]:
    """Stream `key` of the archive into a float32 `.npy` at `target`, checking it on the way; its shape."""
    with archive.open(f"{key}.npy") as member:
        shape, chunks = _read_chunks(member, source, key)
        if len(shape) != _NDIMS[key]:
            raise _fail(source, key, f"expected {_NDIMS[key]}-D array, got shape {shape}")
        if shape[0] != rows:
            raise _fail(source, key, f"length {shape[0]} != terminals length {rows}")
        out = np.lib.format.open_memmap(target, mode="w+", dtype=np.float32, shape=shape)
        start = 0
        with tqdm(total=rows, disable=not progress, desc=key, unit="row", unit_scale=True) as bar:
            for chunk in chunks:
                chunk = _as_float32(source, key, chunk)
                _check_finite(source, key, chunk, offset=start)
                out[start:start + len(chunk)] = chunk
                start += len(chunk)
                bar.update(len(chunk))
        out.flush()
        del out
    return shape


def _read_chunks(member: IO[bytes], source: str, key: str) -> tuple[tuple[int, ...], Iterator[np.ndarray]]:
    """The shape of a 2-D .npy stream and an iterator over its rows, CHUNK_BYTES at a time (a Fortran-order
    array, which has no rows on disk, is read whole)."""
    try:
        version = np.lib.format.read_magic(member)
        shape, fortran_order, dtype = _HEADER_READERS[version](member)
    except (KeyError, ValueError) as exc:
        raise _fail(source, key, f"unreadable .npy header ({_one_line(exc)})") from None
    if dtype.hasobject or not (np.issubdtype(dtype, np.number) or dtype == np.bool_):
        raise _fail(source, key, f"expected a numeric array, got dtype {dtype}")

    def chunks() -> Iterator[np.ndarray]:
        if fortran_order:
            yield np.frombuffer(member.read(), dtype).reshape(shape[::-1]).T
            return
        row_bytes = dtype.itemsize * shape[1]
        per_chunk = max(1, CHUNK_BYTES // max(row_bytes, 1))
        left = shape[0]
        while left:
            n = min(per_chunk, left)
            data = member.read(n * row_bytes)
            if len(data) != n * row_bytes:
                raise _fail(source, key, "truncated array data")
            yield np.frombuffer(data, dtype).reshape(n, shape[1])
            left -= n
    return shape, chunks()
