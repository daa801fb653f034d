"""Atomic file writes: write a temporary file in the same folder, fsync, rename.

A reader never sees a half-written file and a crash never corrupts what was saved before.

JSON the project prints or writes is strict JSON (RFC 8259), which has no NaN or Infinity:
:func:`json_text` writes a non-finite float (an undefined completeness of a sky without
galaxies, a metric that could not be measured) as ``null``, where Python's ``json`` module
would write the bare token ``NaN`` that other parsers reject.
"""

from __future__ import annotations

import contextlib
import json
import math
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
    """Write ``obj`` as indented strict JSON (:func:`json_text`), atomically."""
    atomic_write_text(path, json_text(obj, indent=2) + "\n")


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot write {type(o).__name__} to JSON")


def json_safe(obj: Any, *, default: Callable[[Any], Any] = _json_default) -> Any:
    """``obj`` as plain JSON values: non-finite floats (NaN, +-inf) become None.

    Parameters
    ----------
    obj : Any
        Dicts, lists, tuples (become lists), str, int, bool, None and floats (numpy floats
        included) are walked; anything else is first converted by ``default`` (by default:
        numpy scalars and arrays to Python numbers and lists, paths to str) and the result
        walked, so a NaN inside a converted array becomes None too.
    default : callable
        Converts a value JSON cannot hold, or raises TypeError.
    """
    if isinstance(obj, float):
        return float(obj) if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (str, int)):
        return obj
    if isinstance(obj, dict):
        return {k: json_safe(v, default=default) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v, default=default) for v in obj]
    return json_safe(default(obj), default=default)


def json_text(obj: Any, *, default: Callable[[Any], Any] = _json_default, **kwargs) -> str:
    """``json.dumps`` of :func:`json_safe` ``(obj)``: strict JSON, non-finite floats as ``null``.

    ``kwargs`` go to :func:`json.dumps` (``indent``, ``separators``, ``sort_keys``); it is
    called with ``allow_nan=False``, so nothing non-finite can slip through.
    """
    return json.dumps(json_safe(obj, default=default), allow_nan=False, **kwargs)


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
