"""One entry point from a dataset spec ("hdf", "sim", or a path) to a prepared dataset."""

from __future__ import annotations

import os
from pathlib import Path

from galaxy_core.data.prepared import PreparedDataset
from galaxy_core.errors import DataError
from galaxy_core.progress import Progress

BUILTIN = ("hdf", "sim", "hdf_grid", "hdf_grid_classes")


def require_dataset(spec) -> Path:
    """The path of a dataset spec that is not a built-in name; DataError when nothing is there."""
    path = Path(str(spec)).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such file or folder (built-in datasets are {', '.join(BUILTIN)})")
    return path


def load_dataset(
    spec: str | os.PathLike,
    *,
    resolution: int = 64,
    crop: float = 1.0,
    count: int | None = None,
    seed: int = 0,
    normalisation: str = "asinh",
    neighbours: str = "keep",
    rebuild: bool = False,
    progress: Progress = True,
) -> PreparedDataset:
    """Prepare (or open the cached copy of) a dataset.

    Parameters
    ----------
    spec : str or path
        ``"hdf"`` (galaxies cut out of the Hubble deep field shipped with scikit-image),
        ``"sim"`` (simulated SDSS-like g/r/i galaxies), ``"hdf_grid"`` / ``"hdf_grid_classes"``
        (occupancy / size-class grids of deep-field tiles for the sky position model, with
        ``resolution`` cells per side, ``count`` tiles and ``seed``), a folder of JPG/PNG/TIFF/FITS files
        (searched recursively), a single FITS file, or a prepared dataset folder (one with a
        ``manifest.json``, such as a sky grid dataset), opened as it is (the other options
        are then ignored).
    resolution : int
        Output side length in pixels (32, 64, 128 or 256).
    crop : float
        Centre-crop fraction applied before resizing, in (0, 1]; 0.5 keeps the central half.
    count, seed : int
        ``sim`` only: number of galaxies (default 10,000) and random seed.
    normalisation : {"asinh", "minmax"}
        Physical data only: the invertible asinh stretch (default) or per-image min-max
        (not flux-preserving).
    neighbours : {"keep", "sky"}
        ``hdf`` only: keep the field around each source as it is, or replace other detected
        sources with source-free sky from the field (isolated galaxies;
        :func:`galaxy_core.data.hdf.prepare_hdf`). Any other value, or ``"sky"`` for another
        dataset, raises :class:`DataError`.
    rebuild : bool
        Ignore the cache and prepare again.
    progress : bool or callable
        Show a tqdm progress bar while preparing; or a callable ``progress(done, total)`` called as work
        completes (:mod:`galaxy_core.progress`).
    """
    prepared = Path(str(spec)).expanduser() / "manifest.json"
    if prepared.is_file():  # an already prepared dataset folder (e.g. a sky grid dataset)
        from galaxy_core.data.prepared import open_prepared

        return open_prepared(prepared.parent)
    if resolution not in (32, 64, 128, 256):
        raise DataError(f"resolution must be 32, 64, 128 or 256, got {resolution}")
    if not 0 < crop <= 1:
        raise DataError(f"crop must be in (0, 1], got {crop}")
    if normalisation not in ("asinh", "minmax"):
        raise DataError(f"normalisation must be 'asinh' or 'minmax', got {normalisation!r}")
    spec_s = str(spec)
    if neighbours != "keep" and spec_s != "hdf":
        raise DataError(f"{spec_s}: neighbours = {neighbours!r} is an option of the built-in hdf dataset only "
                        "(its catalogue's segmentation says which pixels are other sources); use 'keep'")
    if spec_s in ("hdf_grid", "hdf_grid_classes"):  # sky position grids (galaxy_core.sky.grids)
        from galaxy_core.sky.grids import GridOptions, prepare_hdf_grids

        opts = GridOptions(grid=resolution, classes=spec_s == "hdf_grid_classes", seed=seed,
                           count=4096 if count is None else count)
        return prepare_hdf_grids(opts, rebuild=rebuild)
    if spec_s == "hdf":
        from galaxy_core.data.hdf import prepare_hdf

        return prepare_hdf(resolution=resolution, crop=crop, neighbours=neighbours, rebuild=rebuild,
                           progress=progress)
    if spec_s == "sim":
        from galaxy_core.data.sim import prepare_sim

        return prepare_sim(
            resolution=resolution,
            crop=crop,
            count=10_000 if count is None else count,
            seed=seed,
            normalisation=normalisation,
            rebuild=rebuild,
            progress=progress,
        )
    path = require_dataset(spec_s)
    from galaxy_core.data.folder import prepare_folder

    return prepare_folder(
        path,
        resolution=resolution,
        crop=crop,
        normalisation=normalisation,
        rebuild=rebuild,
        progress=progress,
    )


def _preparation_record(path: str | os.PathLike) -> Path:
    import hashlib

    from galaxy_core.paths import cache_dir

    key = hashlib.sha256(str(Path(path).expanduser().resolve()).encode()).hexdigest()[:16]
    return cache_dir() / "preparations" / f"{key}.json"


def remember_preparation(path: str | os.PathLike, *, resolution: int, crop: float, normalisation: str) -> None:
    """Record how a folder was prepared, so ``galaxygan train --data FOLDER`` uses the same."""
    from galaxy_core.io.atomic import atomic_write_text, json_text

    rec = _preparation_record(path)
    rec.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(rec, json_text({"path": str(Path(path).expanduser().resolve()), "resolution": resolution,
                                       "crop": crop, "normalisation": normalisation}))


def remembered_preparation(path: str | os.PathLike) -> dict | None:
    """The settings of the last ``galaxygan data prepare`` of ``path``: resolution, crop and
    normalisation, or None when it was never prepared that way."""
    import json

    try:
        rec = json.loads(_preparation_record(path).read_text())
    except (OSError, ValueError):
        return None
    return {k: rec[k] for k in ("resolution", "crop", "normalisation") if k in rec}


FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fz")


def is_physical_source(spec: str | os.PathLike) -> bool:
    """True when the dataset holds flux data (``sim``, FITS files), where the normalisation applies."""
    spec_s = str(spec)
    if spec_s in BUILTIN:
        return spec_s == "sim"
    path = Path(spec_s).expanduser()
    if path.is_file():
        return path.name.lower().endswith(FITS_SUFFIXES)
    return any(p.name.lower().endswith(FITS_SUFFIXES) for p in path.rglob("*") if p.is_file())
