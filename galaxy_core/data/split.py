"""A deterministic train / held-out split of a folder of galaxy images.

The memorisation verdict and honest distribution metrics need real images the model never saw.
:func:`split_folder` sets a fraction of a user's folder aside once, before training, and lays
the two parts out as folders of links to the original files, which every command takes as it
takes any folder (``galaxygan train --data SPLIT/NAME_train``, ``galaxygan evaluate CKPT
--held-out SPLIT/NAME_held_out``).

Which side an item falls on depends only on its relative path and the seed (a SHA-256 hash
mapped to [0, 1)), not on the order or the number of files: adding images later never moves an
image already assigned, and the same folder and seed always give the same split. Per-band FITS
files of one object (``obj_g.fits``, ``obj_r.fits``, ...) are one item and stay together.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from galaxy_core.errors import DataError
from galaxy_core.io.atomic import atomic_write_json

__all__ = ["SPLIT_RECORD", "split_folder"]

SPLIT_RECORD = "split.json"


def _items(path: Path) -> dict[str, list[Path]]:
    """``{item key (relative, posix): [files]}`` in the order the folder reader sees them."""
    from galaxy_core.data.folder import _scan
    from galaxy_core.io.fits import group_band_files

    images, fits = _scan(path)
    if images:
        return {f.relative_to(path).as_posix(): [f] for f in images}
    groups = group_band_files(fits)
    return {Path(key).relative_to(path).as_posix(): list(files.values()) for key, files in groups.items()}


def _draw(key: str, seed: int) -> float:
    """A number in [0, 1) fixed by ``(seed, key)``."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.symlink(src.resolve(), dst)
    except OSError:  # file systems without symbolic links
        shutil.copy2(src, dst)


def split_folder(path: str | os.PathLike, *, fraction: float, out: str | os.PathLike | None = None,
                 seed: int = 0) -> dict:
    """Set ``fraction`` of a folder's galaxies aside as held-out images.

    Parameters
    ----------
    path : path
        Folder of JPG/PNG/TIFF or FITS files (sub-folders included, hidden files skipped).
    fraction : float
        Fraction of items held out, in (0, 1); each item is held out with this probability,
        so the held-out count is close to, not exactly, ``fraction * N``. At least one item
        lands on each side.
    out : path, optional
        Where ``NAME_train/`` and ``NAME_held_out/`` (``NAME`` = the folder's name) are written (default: ``PATH_split`` beside ``path``).
        Must not be inside ``path``.
    seed : int
        Which split (>= 0).

    Returns
    -------
    dict
        The record also written to ``OUT/split.json``: ``source``, ``fraction``, ``seed``,
        ``train`` and ``held_out`` (sorted item keys), ``train_dir``, ``held_out_dir``.

    Raises
    ------
    DataError
        ``path`` holds fewer than two items, ``fraction`` or ``seed`` out of range, ``out``
        inside ``path``, or ``out`` already holds a different split (it is never overwritten).
    """
    src = Path(path)
    if not src.is_dir():
        raise DataError(f"{src}: a held-out split needs a folder, not {'a file' if src.exists() else 'nothing'}")
    if isinstance(fraction, bool) or not 0.0 < float(fraction) < 1.0:
        raise DataError(f"{src}: held-out fraction must be in (0, 1), got {fraction!r}")
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise DataError(f"{src}: split seed must be a whole number >= 0, got {seed!r}")
    dest = Path(out) if out is not None else src.parent / f"{src.name}_split"
    if dest.resolve().is_relative_to(src.resolve()):
        raise DataError(f"{dest}: the split folder must not be inside {src} (its links would be read as data)")
    items = _items(src)
    if len(items) < 2:
        raise DataError(f"{src}: {len(items)} galaxy item(s); a split needs at least two (it holds out whole files: "
                        "a FITS file of several images counts as one item)")
    draws = {key: _draw(key, int(seed)) for key in items}
    held = sorted(k for k, u in draws.items() if u < fraction)
    if not held:  # a tiny folder: hold out the item with the smallest draw
        held = [min(draws, key=draws.get)]
    if len(held) == len(items):
        held.remove(max(held, key=draws.get))
    train = sorted(set(items) - set(held))
    dirs = {"train": dest / f"{src.name}_train", "held_out": dest / f"{src.name}_held_out"}
    record = {"source": str(src.resolve()), "fraction": float(fraction), "seed": int(seed),
              "train": train, "held_out": held,
              "train_dir": str(dirs["train"]), "held_out_dir": str(dirs["held_out"])}
    rec_path = dest / SPLIT_RECORD
    if rec_path.exists():
        old = json.loads(rec_path.read_text())
        if {k: old.get(k) for k in ("source", "fraction", "seed", "train", "held_out")} != \
                {k: record[k] for k in ("source", "fraction", "seed", "train", "held_out")}:
            raise DataError(f"{dest}: holds a different split ({rec_path}); remove it or choose another --split-dir")
        return old
    if dest.exists() and any(dest.iterdir()):
        raise DataError(f"{dest}: exists and is not a split folder; choose another --split-dir")
    for side, keys in (("train", train), ("held_out", held)):
        for key in keys:
            for f in items[key]:
                _link(f, dirs[side] / f.relative_to(src))
    atomic_write_json(rec_path, record)  # written last: a split folder with a record is complete
    return record
