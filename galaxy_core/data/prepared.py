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

import errno
import hashlib
import json
import os
import shutil
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
        if not path.exists():
            return None
        from astropy.table import Table

        return Table.read(path)

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
    if not mpath.exists() or not (root / "images.npy").exists():
        raise DataError(f"{root}: not a prepared dataset (manifest.json or images.npy missing)")
    deadline = time.monotonic() + 5.0
    while True:
        try:
            return _open_files(root)
        except FileNotFoundError:
            # another process is renaming a new copy of this dataset into place (``write_prepared``):
            # the folder is absent for an instant, then whole again
            if time.monotonic() > deadline:
                raise DataError(f"{root}: not a prepared dataset (its files disappeared while it was read)") from None
            time.sleep(0.02)


def _open_files(root: Path) -> PreparedDataset:
    """Read the manifest and open the images (memory map) and catalog at once, so a dataset
    already opened keeps its files even if a rebuild replaces the folder afterwards."""
    mpath = root / "manifest.json"
    try:
        manifest = json.loads(mpath.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{mpath}: corrupt manifest ({e}); delete the folder to rebuild it") from e
    if manifest.get("format") != FORMAT:
        raise DataError(f"{mpath}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    _check_images_file(root / "images.npy", manifest.get("count"))
    ds = PreparedDataset(root=root, manifest=manifest)
    ds.images, ds.catalog  # noqa: B018 (cached properties: opened now, from this copy of the folder)
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
) -> PreparedDataset:
    """Write a prepared dataset atomically (temporary sibling folder, then rename).

    Parameters
    ----------
    root : path
        Destination folder; replaced if it exists.
    images : ndarray, (N, C, H, W), uint8 or float16
        uint8 for 8-bit images (0..255), float16 in [-1, 1] for stretched physical data.
    manifest : dict
        Must contain ``name``, ``key``, ``channels``, ``kind`` ("image" or "physical"); ``count``,
        ``resolution``, ``dtype`` and ``format`` are filled in here.
    catalog : astropy.table.Table, optional
        One row per image.
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
    )
    if len(manifest["channels"]) != images.shape[1]:
        raise ValueError(f"{len(manifest['channels'])} channel names for {images.shape[1]} channels")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        np.save(tmp / "images.npy", np.ascontiguousarray(images))
        if catalog is not None:
            catalog.write(tmp / "catalog.fits")
        atomic_write_json(tmp / "manifest.json", manifest)
        _swap_in(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _open_settled(root)


def _swap_in(tmp: Path, root: Path) -> None:
    """Rename the finished folder ``tmp`` to ``root``, replacing what is there.

    Safe when other processes prepare the same dataset at the same moment (two ranks of a
    distributed run, a rebuild beside a training run): an earlier ``root`` is moved aside
    under a name of its own before the rename and deleted after it, and a ``root`` another
    writer renamed into place in between is moved aside in turn. Every writer's folder is
    complete, so whichever is renamed last is a whole dataset.
    """
    for stale in root.parent.glob(f".{root.name}.old-*"):  # left by a writer that was killed mid-swap
        shutil.rmtree(stale, ignore_errors=True)
    for _ in range(20):
        try:
            os.replace(tmp, root)  # atomic; fails while ``root`` is a non-empty folder
            return
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise  # not a folder in the way: a real error (permissions, another file system)
        aside = root.with_name(f".{root.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            os.replace(root, aside)
        except FileNotFoundError:  # another writer moved it aside first
            continue
        shutil.rmtree(aside, ignore_errors=True)
    raise OSError(f"{root}: could not be replaced; other processes kept writing it")


def _open_settled(root: Path) -> PreparedDataset:
    """``open_prepared`` that waits out another writer's swap (``root`` briefly absent)."""
    deadline = time.monotonic() + 5.0
    while True:
        try:
            return open_prepared(root)
        except DataError:
            if (root / "manifest.json").exists() or time.monotonic() > deadline:
                raise
        time.sleep(0.05)
