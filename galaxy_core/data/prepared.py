"""The prepared-dataset cache: the one format every data source is turned into.

A prepared dataset is a folder::

    manifest.json   what it is: sources and their hashes, preprocessing, channels, stretch
    images.npy      (N, C, H, W) array, memory-mapped; uint8 for 8-bit images,
                    float16 in model range [-1, 1] for physical (stretched) data
    catalog.fits    optional per-image table (row i describes image i)

It is written into a temporary sibling folder and renamed into place, so a crash while
preparing never leaves a half-written dataset that looks complete. An epoch reads the
memory-mapped array and never decodes a JPG again. The cache key (``manifest["key"]``) is a
hash of the source file hashes and the preprocessing options; a changed source or option gives
a different key and so a rebuild.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import shutil
import socket
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from galaxy_core.errors import DataError
from galaxy_core.io.atomic import atomic_write_json
from galaxy_core.io.units import uint8_to_model

FORMAT = "galaxygan-prepared/1"


def cache_key(obj: Any) -> str:
    """Stable short hash of a JSON-serialisable description (sources + options)."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def file_hash(path: str | os.PathLike, *, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes (hex, first 16 characters)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()[:16]


@dataclass
class PreparedDataset:
    """A prepared dataset opened from its folder.

    Attributes
    ----------
    root : Path
        The dataset folder.
    manifest : dict
        The parsed ``manifest.json`` (see module docstring).
    """

    root: Path
    manifest: dict = field(repr=False)

    @cached_property
    def images(self) -> np.ndarray:
        """(N, C, H, W) memory-mapped array, uint8 or float16 (see ``dtype``)."""
        return np.load(self.root / "images.npy", mmap_mode="r")

    def __len__(self) -> int:
        return int(self.manifest["count"])

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def channels(self) -> list[str]:
        """Channel names in array order: ``["R", "G", "B"]``, ``["L"]`` or bands ``["g", "r", "i"]``."""
        return list(self.manifest["channels"])

    @property
    def num_bands(self) -> int:
        return len(self.manifest["channels"])

    @property
    def resolution(self) -> int:
        return int(self.manifest["resolution"])

    @property
    def physical(self) -> bool:
        """True for flux data (FITS, ``sim``) that carries an invertible stretch."""
        return self.manifest.get("kind") == "physical"

    @property
    def stretch(self) -> dict | None:
        """Stretch parameters (see :mod:`galaxy_core.io.stretch`) or None for 8-bit images."""
        return self.manifest.get("stretch")

    @cached_property
    def catalog(self):
        """Per-image :class:`astropy.table.Table`, or None when the source has none."""
        path = self.root / "catalog.fits"
        if self.manifest.get("catalog") is False or (self.manifest.get("catalog") is None and not path.exists()):
            return None  # none written (older manifests do not say: then the file decides)
        from astropy.table import Table

        deadline = time.monotonic() + 5.0
        while True:  # read when first asked for (tens of ms): most users of a dataset never need it
            try:
                return Table.read(path)
            except FileNotFoundError:  # the folder is being replaced by a new copy: wait for it
                if time.monotonic() > deadline:
                    raise DataError(f"{path}: missing, though the manifest says a catalogue was written; "
                                    "delete the folder to prepare it again") from None
                time.sleep(0.02)

    def to_model_range(self, idx=slice(None)) -> np.ndarray:
        """Images ``idx`` as float32 (n, C, H, W) in [-1, 1] (model range)."""
        x = np.asarray(self.images[idx])
        if x.dtype == np.uint8:
            return uint8_to_model(x)
        return x.astype(np.float32)

    @cached_property
    def _class_fractions(self) -> list[float]:
        k = int(self.manifest.get("num_classes") or 2)
        counts = np.bincount(np.asarray(self.images, np.int64).ravel(), minlength=k)[:k]
        return [float(c) for c in counts / max(int(counts.sum()), 1)]

    def description(self) -> dict:
        """The data description stored in every checkpoint trained on this dataset.

        A grid dataset (``kind`` ``"grid"``) adds what composing a sky from a model of it needs
        (:func:`galaxy_core.sky.grids.grid_properties`): ``cell_px``, ``size_thresholds_area``
        (pix2) and ``class_fractions`` (fraction of all cells holding each class, measured on
        the images).
        """
        m = self.manifest
        grid = {}
        if m.get("kind") == "grid":
            grid = {"cell_px": m.get("cell_px"), "size_thresholds_area": m.get("size_thresholds_area"),
                    "class_fractions": self._class_fractions}
        return grid | {
            "name": m["name"],
            "key": m["key"],
            "source": m.get("source"),
            "count": m["count"],
            "channels": m["channels"],
            "kind": m.get("kind", "image"),
            "resolution": m["resolution"],
            "preprocess": m.get("preprocess", {}),
            "stretch": m.get("stretch"),
            "pixel_scale_arcsec": m.get("pixel_scale_arcsec"),
            "zero_point": m.get("zero_point"),
            "flux_unit": m.get("flux_unit") or m.get("bunit"),  # "bunit": folders prepared before the name was unified
        }


def open_prepared(root: str | os.PathLike) -> PreparedDataset:
    """Open a prepared dataset folder, checking it is complete.

    Raises
    ------
    DataError
        No manifest or images, a manifest that is not JSON or of another format, or an
        ``images.npy`` cut short or holding another count than the manifest's.
    """
    root = Path(root)
    mpath = root / "manifest.json"
    deadline = time.monotonic() + 5.0
    while True:
        if mpath.exists() and (root / "images.npy").exists():
            try:
                return _open_files(root)
            except FileNotFoundError:
                pass  # a new copy of this dataset is being swapped in (``write_prepared``): look again
        elif not _swap_in_progress(root):
            if not (mpath.exists() and (root / "images.npy").exists()):  # looked at again: a swap may just have ended
                raise DataError(f"{root}: not a prepared dataset (manifest.json or images.npy missing)")
            continue
        if time.monotonic() > deadline:
            raise DataError(f"{root}: not a prepared dataset (its files disappeared while it was read)")
        time.sleep(0.02)


def _swap_in_progress(root: Path) -> bool:
    """A writer without atomic exchange has moved ``root`` aside and not yet put its copy there."""
    return any(root.parent.glob(f".{root.name}{_TEMP_MARK}*-old-*"))


def _open_files(root: Path) -> PreparedDataset:
    """Read the manifest and open the images (memory map) at once, so a dataset already opened
    keeps its images even if a rebuild replaces the folder afterwards (the catalogue, read on
    first use, then comes from the new copy: the same sources and options, the same rows)."""
    mpath = root / "manifest.json"
    try:
        manifest = json.loads(mpath.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{mpath}: corrupt manifest ({e}); delete the folder to rebuild it") from e
    if manifest.get("format") != FORMAT:
        raise DataError(f"{mpath}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    _check_images_file(root / "images.npy", manifest.get("count"))
    ds = PreparedDataset(root=root, manifest=manifest)
    ds.images  # noqa: B018 (a cached property: memory-mapped now, so this copy's images stay readable)
    return ds


def _check_images_file(path: Path, count) -> None:
    """DataError where ``images.npy`` is not a whole ``.npy`` of ``count`` images: a damaged
    header, fewer bytes than its header declares (a copy or write cut short) or another count
    than the manifest's. Reads only the header and the file's size."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(f)
            offset = f.tell()
        size = path.stat().st_size
    except FileNotFoundError:
        raise  # the folder is being replaced (``open_prepared`` waits) or was removed
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable .npy array ({e}); delete the folder to prepare it again") from e
    need = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size < need or len(shape) != 4:
        raise DataError(f"{path}: damaged ({size:,} bytes where its header declares a {shape} {dtype} array of "
                        f"{need:,}); delete the folder to prepare it again")
    if count is not None and shape[0] != int(count):
        raise DataError(f"{path}: holds {shape[0]} images where the manifest says {count}; delete the folder to "
                        "prepare it again")


def write_prepared(
    root: str | os.PathLike,
    images: np.ndarray,
    manifest: dict,
    *,
    catalog=None,
    replace: bool = False,
) -> PreparedDataset:
    """Write a prepared dataset atomically (temporary sibling folder, then rename).

    Parameters
    ----------
    root : path
        Destination folder.
    images : ndarray, (N, C, H, W), uint8 or float16
        uint8 for 8-bit images (0..255), float16 in [-1, 1] for stretched physical data.
    manifest : dict
        Must contain ``name``, ``key``, ``channels``, ``kind`` ("image" or "physical"); ``count``,
        ``resolution``, ``dtype``, ``format`` and ``catalog`` are filled in here.
    catalog : astropy.table.Table, optional
        One row per image.
    replace : bool
        Replace a whole dataset already at ``root`` (a rebuild). Otherwise a whole one found
        there, which another process prepared meanwhile from the same sources and options
        (its folder name is their key), is kept and this copy discarded; a damaged one is
        always replaced.

    Notes
    -----
    Several processes may prepare one dataset at once (the ranks of a distributed run on an
    empty cache, a rebuild beside a training run): each writes its own temporary folder, and
    the folder at ``root`` is only ever swapped whole, with Linux's atomic exchange of two
    names where the system has it, so a reader never finds ``root`` missing or half there.
    A temporary folder left by a killed writer is removed by the next writer.
    """
    root = Path(root)
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {images.shape}")
    if images.dtype not in (np.uint8, np.float16):
        raise ValueError(f"images must be uint8 or float16, got {images.dtype}")
    if len(images) == 0:
        raise DataError(f"{manifest.get('source', root)}: no usable images")
    if catalog is not None and len(catalog) != len(images):
        raise ValueError(f"catalog has {len(catalog)} rows for {len(images)} images")
    manifest = dict(manifest)
    manifest.update(
        format=FORMAT,
        count=int(images.shape[0]),
        resolution=int(images.shape[-1]),
        dtype=str(images.dtype),
        catalog=catalog is not None,
    )
    if len(manifest["channels"]) != images.shape[1]:
        raise ValueError(f"{len(manifest['channels'])} channel names for {images.shape[1]} channels")
    root.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(root.parent)
    tmp = new_temporary_dir(root.parent, root.name)
    try:
        np.save(tmp / "images.npy", np.ascontiguousarray(images))
        if catalog is not None:
            catalog.write(tmp / "catalog.fits")
        atomic_write_json(tmp / "manifest.json", manifest)
        _swap_in(tmp, root, replace=replace)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # ours, unused, or the copy it replaced
    return open_prepared(root)


# Temporary folders beside the cache are named ``.<label>.tmp-<host>-<pid>-<random>``, so one
# that a killed process left behind can be told from one a live writer is still filling.
_TEMP_MARK = ".tmp-"


def new_temporary_dir(parent: Path, label: str) -> Path:
    """A new empty folder in ``parent`` for work in progress (a dataset being written, a
    spill file), named after this host and process; see :func:`remove_stale_temporaries`."""
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{label}{_TEMP_MARK}{_host()}-{os.getpid()}-", dir=parent))


def remove_stale_temporaries(parent: Path) -> None:
    """Delete the temporary folders in ``parent`` whose process on this host no longer runs
    (killed while preparing). Folders of other hosts (a cache shared over a network) and of
    live processes are left alone."""
    mine = f"{_TEMP_MARK}{_host()}-"
    for entry in parent.glob(f".*{mine}*"):
        pid = entry.name.split(mine, 1)[1].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


def _host() -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in socket.gethostname())[:40] or "host"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _swap_in(tmp: Path, root: Path, *, replace: bool) -> None:
    """Put the finished folder ``tmp`` at ``root``; afterwards ``tmp`` holds what is to be
    deleted (nothing, the replaced copy, or this copy when a whole one is kept)."""
    for _ in range(20):
        try:
            os.replace(tmp, root)  # atomic; fails while ``root`` is a non-empty folder
            return
        except OSError as e:
            in_the_way = e.errno in (errno.ENOTEMPTY, errno.EEXIST) or (
                e.errno in (errno.EACCES, errno.EPERM) and root.is_dir())  # Windows says "access denied"
            if not in_the_way:
                raise  # a real error (permissions, another file system)
        if not replace and _whole(root):
            return  # prepared by another process meanwhile: keep it, ours is deleted
        if _exchange(tmp, root):
            return  # ``root`` is ours now, atomically; the old copy is at ``tmp``
        aside = root.with_name(f".{root.name}{_TEMP_MARK}{_host()}-{os.getpid()}-old-{uuid.uuid4().hex[:8]}")
        try:
            os.replace(root, aside)  # no atomic exchange here: ``root`` is missing until the next line
        except FileNotFoundError:  # another writer moved it aside first
            continue
        try:
            os.replace(tmp, root)
        except OSError:  # another writer's copy got there first, or a real error: put the old one back
            try:
                os.replace(aside, root)
            except OSError:  # something is at ``root`` again: the old copy is not needed
                shutil.rmtree(aside, ignore_errors=True)
            continue
        shutil.rmtree(aside, ignore_errors=True)  # the replaced copy, deleted only once ours is in place
        return
    raise OSError(f"{root}: could not be replaced; other processes kept writing it")


def _whole(root: Path) -> bool:
    try:
        open_prepared(root)
    except (DataError, OSError):
        return False
    return True


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2`` with ``RENAME_EXCHANGE``); False where
    the system or file system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err == errno.ENOENT:  # ``b`` was moved away meanwhile: the plain rename will do
        return False
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EXDEV, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(b))
