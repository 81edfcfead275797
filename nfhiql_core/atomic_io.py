"""Atomic file writes: write beside the target, fsync, then rename over it.

A crash or SIGKILL mid-write leaves the previous file (or nothing) in place, never a torn file.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import IO, Any, Iterator, Mapping

import numpy as np

from nfhiql_core.errors import OutputExistsError


def ensure_writable(path: str | os.PathLike, force: bool) -> Path:
    """Return `path` as a Path; raise OutputExistsError if it exists and `force` is False."""
    path = Path(path)
    if path.exists() and not force:
        raise OutputExistsError(f"{path}: already exists (pass --force to overwrite)")
    return path


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file next to `path`; on clean exit fsync it and rename it onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def check_output_dir(path: str | os.PathLike, force: bool) -> None:
    """OutputExistsError if `path` is a file or a non-empty directory and `force` is False."""
    path = Path(path)
    if path.exists() and (path.is_file() or any(path.iterdir())) and not force:
        raise OutputExistsError(f"{path}: already exists and is not empty (pass --force to overwrite)")


def staging_dir(path: str | os.PathLike) -> Path:
    """A new empty directory beside `path` (same file system, so `publish_dir`'s rename is atomic)."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir(parents=True)
    return tmp


def publish_dir(tmp: Path, path: Path, force: bool) -> None:
    """fsync the files of `tmp`, then rename it to `path` (replacing an old one if `force`)."""
    for file in tmp.iterdir():
        with open(file, "rb") as f:
            os.fsync(f.fileno())
    check_output_dir(path, force)
    old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}") if path.exists() else None
    if old is not None:
        os.rename(path, old)
    os.rename(tmp, path)
    if old is not None:
        shutil.rmtree(old) if old.is_dir() else old.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray], compressed: bool = True) -> None:
    """Atomically write `arrays` to an .npz file."""
    with atomic_open(path, "wb") as f:
        (np.savez_compressed if compressed else np.savez)(f, **arrays)


def save_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write `obj` as indented JSON."""
    with atomic_open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")
