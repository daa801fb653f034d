"""Atomic file writes: write a temporary file in the same folder, fsync, rename.

A reader never sees a half-written file and a crash never corrupts what was saved before.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[BinaryIO]:
    """Open a temporary file beside ``path``; on success it replaces ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot write {type(o).__name__} to JSON")


# --------------------------------------------------------------------------- measured once per cache


def write_arrays(path: str | os.PathLike, arrays: Mapping[str, Any]) -> bool:
    """Write named arrays as an uncompressed ``.npz`` atomically (:func:`atomic_open`).

    Returns False, having written nothing, where the folder cannot be written (a read-only
    cache): the caller measures again next time instead of failing."""
    import numpy as np

    try:
        with atomic_open(path) as f:
            np.savez(f, **arrays)
    except OSError:
        return False
    return True


def read_arrays(path: str | os.PathLike, keys: Iterable[str] | None = None) -> dict | None:
    """The arrays of an ``.npz`` written by :func:`write_arrays`, or None when the file is
    missing, damaged, not an ``.npz``, or lacks one of ``keys``. Never unpickles."""
    import zipfile

    import numpy as np

    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            return None
        with z:
            out = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None
    return out if keys is None or set(keys) <= set(out) else None


def cached_arrays(path: str | os.PathLike, measure: Callable[[], Mapping[str, Any]],
                  keys: Iterable[str] | None = None) -> dict:
    """Named arrays measured once and kept at ``path``: read them (:func:`read_arrays`), or
    call ``measure()`` and write what it returns (:func:`write_arrays`). A damaged entry is
    measured again and rewritten; a read-only cache is measured every time. The key of what
    is measured (versions, settings, inputs) belongs in ``path``."""
    cached = read_arrays(path, keys)
    if cached is not None:
        return cached
    arrays = dict(measure())
    write_arrays(path, arrays)
    return arrays
