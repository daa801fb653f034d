"""Coarse sky grids: a class per cell (0 empty, 1..3 small/medium/large galaxy).

Stage one of the two-stage sparse-sky model (ETH Zurich: "Generative models for sparse
cosmological images", a position GAN on a coarse grid followed by a patch GAN per occupied
cell). A sky of ``H x W`` pixels is divided into ``G x G`` cells of ``cell_px`` pixels; a cell
holds the class of the largest galaxy whose centre falls in it.

Size classes
------------
``terciles`` (default, data-driven): the 1/3 and 2/3 quantiles of the catalogue's sizes split
small / medium / large evenly; sizes so often equal that a class would be empty are refused
(:func:`size_thresholds`). ``heuristic``: fixed area thresholds
:data:`HEURISTIC_AREA` (pix2), a fixed-cut option in the spirit of the paper's hand-set
thresholds (the paper's exact values are for its own simulated images and are not reused).

Datasets
--------
:func:`prepare_hdf_grids` cuts random ``G * cell_px`` square tiles (random offset, one of the
eight flips/quarter turns) out of the built-in Hubble deep field catalogue
(:func:`galaxy_core.data.hdf.hdf_catalog`) and grids them; :func:`prepare_catalogue_grids`
does the same for a user catalogue (CSV or FITS table with ``x``, ``y`` and ``size`` or
``area`` columns) or for sources segmented from an image (:func:`catalogue_from_image`).
Both write a prepared dataset (:mod:`galaxy_core.data.prepared`) of (N, 1, G, G) uint8 class
ids with ``num_classes`` in the manifest, the data kind ``grid`` of the training engine.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from galaxy_core.data.prepared import PreparedDataset, cache_key, open_prepared, write_prepared
from galaxy_core.errors import DataError
from galaxy_core.io.render import sample_cells  # noqa: F401  (re-exported: the composer's draw)

GRID_VERSION = "skygrid/1"
CLASS_NAMES = ("empty", "small", "medium", "large")
HEURISTIC_AREA = (80.0, 300.0)  # pix2: small < 80 <= medium < 300 <= large
MIN_AREA = 50  # pix2, the hdf stamp cut: smaller segments are mostly noise peaks and knots


# --------------------------------------------------------------------------- classes


def size_thresholds(sizes: np.ndarray, *, method: str = "terciles", allow_empty: bool = False) -> tuple[float, float]:
    """Two size thresholds splitting galaxies into small / medium / large.

    Parameters
    ----------
    sizes : array (n,), float
        Segment areas (pix2) of the galaxies.
    method : {"terciles", "heuristic"}
        Data-driven terciles, or the fixed :data:`HEURISTIC_AREA`.
    allow_empty : bool
        Return terciles that leave a class empty instead of raising (for occupancy grids,
        which only record the thresholds).

    Returns
    -------
    (lo, hi) : float
        small if ``size < lo``, medium if ``size < hi``, else large.

    Raises
    ------
    DataError
        An unknown method, fewer than 3 sizes for terciles, or terciles that leave a class
        empty: with many equal sizes (a third of them at one value, e.g. a catalogue giving
        one size to most galaxies) the terciles coincide with each other or with the smallest
        size, and a class would never occur in the grids. The message suggests
        ``--thresholds heuristic``.
    """
    from galaxy_core.data.hdf import empty_size_classes

    if method == "heuristic":
        return HEURISTIC_AREA
    if method != "terciles":
        raise DataError(f"size thresholds: method must be 'terciles' or 'heuristic', got {method!r}")
    sizes = np.asarray(sizes, float)
    if sizes.size < 3:
        raise DataError(f"size thresholds: terciles need at least 3 galaxies, got {sizes.size}")
    lo, hi = np.percentile(sizes, [100 / 3, 200 / 3])
    empty = [] if allow_empty else empty_size_classes(sizes, lo, hi)
    if empty:
        values, counts = np.unique(sizes, return_counts=True)
        k = int(np.argmax(counts))
        raise DataError(f"size thresholds: the terciles of the {sizes.size} sizes are {lo:g} and {hi:g} pix2, so no "
                        f"galaxy would be {' or '.join(empty)} ({counts[k]} of the sizes are {values[k]:g}); use "
                        f"--thresholds heuristic (fixed cuts at {HEURISTIC_AREA[0]:g} and {HEURISTIC_AREA[1]:g} pix2), "
                        "--occupancy (no size classes), or give sizes that differ")
    return float(lo), float(hi)


def size_class(sizes: np.ndarray, thresholds: tuple[float, float]) -> np.ndarray:
    """(n,) int64 class 1 (small), 2 (medium) or 3 (large) of each size."""
    sizes = np.asarray(sizes, float)
    lo, hi = thresholds
    return np.where(sizes < lo, 1, np.where(sizes < hi, 2, 3)).astype(np.int64)


# --------------------------------------------------------------------------- grid <-> catalogue


def catalogue_to_grid(x: np.ndarray, y: np.ndarray, cls: np.ndarray, *, grid: int, cell_px: float) -> np.ndarray:
    """Grid of a catalogue: the largest class whose centre lies in each cell.

    Parameters
    ----------
    x, y : array (n,), float
        Galaxy centres (pix, 0-based, pixel centres at integers) in a sky whose pixel
        ``(x, y)`` is ``sky[y, x]``; sources outside ``[-0.5, grid * cell_px - 0.5)`` are
        dropped.
    cls : array (n,), int
        Class 1..K-1 of each galaxy (1 everywhere for an occupancy grid).
    grid : int
        Cells per side G.
    cell_px : float
        Cell side in pixels.

    Returns
    -------
    ndarray (G, G), uint8
        ``out[i, j]`` is the class of row ``i`` (y), column ``j`` (x); 0 where empty.
    """
    x, y, cls = np.asarray(x, float), np.asarray(y, float), np.asarray(cls, np.int64)
    j = np.floor((x + 0.5) / cell_px).astype(np.int64)
    i = np.floor((y + 0.5) / cell_px).astype(np.int64)
    inside = (i >= 0) & (i < grid) & (j >= 0) & (j < grid)
    out = np.zeros((grid, grid), np.uint8)
    np.maximum.at(out, (i[inside], j[inside]), cls[inside].astype(np.uint8))
    return out


def grid_to_catalogue(cells: np.ndarray, *, cell_px: float, jitter: float = 0.0,
                      rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
    """Positions of the galaxies a grid asks for: cell centres plus uniform jitter.

    Parameters
    ----------
    cells : array (G, G), int
        Class per cell (0 empty).
    cell_px : float
        Cell side in pixels.
    jitter : float
        Maximum offset from the cell centre as a fraction of the cell side, in [0, 0.5]
        (0.5 spreads positions over the whole cell).
    rng : numpy Generator, optional
        Needed when ``jitter > 0``.

    Returns
    -------
    dict
        ``x``, ``y`` (n,) float64 pixel positions, ``cls`` (n,) int64, ``row``, ``col`` (n,)
        the cell, in row-major cell order.
    """
    cells = np.asarray(cells)
    if not 0 <= jitter <= 0.5:
        raise ValueError(f"jitter must be in [0, 0.5] of a cell, got {jitter}")
    row, col = np.nonzero(cells)
    x = (col + 0.5) * cell_px - 0.5
    y = (row + 0.5) * cell_px - 0.5
    if jitter > 0:
        if rng is None:
            raise ValueError("grid_to_catalogue: jitter > 0 needs an rng")
        x = x + rng.uniform(-jitter, jitter, len(x)) * cell_px
        y = y + rng.uniform(-jitter, jitter, len(y)) * cell_px
    return {"x": x, "y": y, "cls": cells[row, col].astype(np.int64), "row": row, "col": col}


def dihedral_xy(x: np.ndarray, y: np.ndarray, k: int, side: float) -> tuple[np.ndarray, np.ndarray]:
    """Apply element ``k`` (0..7) of the square's symmetry group to positions in a square
    tile of ``side`` pixels: ``k % 4`` quarter turns, then a left-right flip if ``k >= 4``."""
    c = (side - 1) / 2
    u, v = x - c, y - c
    for _ in range(k % 4):
        u, v = v, -u
    if k >= 4:
        u = -u
    return u + c, v + c


# --------------------------------------------------------------------------- catalogues


@dataclass(frozen=True)
class GridOptions:
    """Settings of a grid dataset (stored in its manifest).

    Parameters
    ----------
    grid : int
        Cells per side G (the position model's resolution; 32 in the paper).
    cell_px : int
        Cell side in sky pixels; a tile is ``grid * cell_px`` pixels square.
    classes : bool
        True: classes 1..3 by size (4 classes with empty); False: occupancy only (2 classes).
    thresholds : str
        ``"terciles"`` or ``"heuristic"`` (see module docstring).
    min_area : float
        Sources with a smaller segment area (pix2) are left out.
    count : int
        Number of tiles.
    seed : int
        Seed of tile offsets and symmetries.
    """

    grid: int = 32
    cell_px: int = 16
    classes: bool = True
    thresholds: str = "terciles"
    min_area: float = MIN_AREA
    count: int = 4096
    seed: int = 0

    @property
    def num_classes(self) -> int:
        return 4 if self.classes else 2

    @property
    def tile_px(self) -> int:
        return self.grid * self.cell_px


def hdf_sources(*, min_area: float = MIN_AREA) -> dict[str, np.ndarray]:
    """Galaxy positions and areas of the built-in deep field (stars and their spikes removed).

    Returns
    -------
    dict
        ``x``, ``y`` (pix, field frame), ``area`` (pix2) of every detection that is not a star,
        a diffraction-spike fragment or below ``min_area``; plus ``shape`` (H, W) of the field.
    """
    from galaxy_core.data.hdf import hdf_catalog, hdf_field

    cat = hdf_catalog()
    keep = ~np.isin(np.asarray(cat["reject"]), ["star", "near_star"]) & (np.asarray(cat["area"]) >= min_area)
    return {"x": np.asarray(cat["x"])[keep], "y": np.asarray(cat["y"])[keep],
            "area": np.asarray(cat["area"], float)[keep], "shape": hdf_field().shape[:2]}


HDF_GRID_SOURCE = "builtin:hdf catalogue tiles"  # the ``source`` of every grid dataset of prepare_hdf_grids


@dataclass(frozen=True)
class GridProperties:
    """What composing a sky from a position model needs to know of the grids it learnt.

    Attributes
    ----------
    cell_px : int
        Cell side (sky pixels) of the grids: the scale at which the model's galaxy density holds.
    thresholds : (float, float) or None
        Size class thresholds (pix2) of the catalogue the grids were made from (small < lo <=
        medium < hi <= large); None where not recorded.
    class_fractions : ndarray (K,) or None
        Fraction of the grids' cells holding each class 0..K-1 (empty first); None where not
        recorded.
    builtin_hdf : bool
        The grids are tiles of the built-in deep field's catalogue.
    """

    cell_px: int
    thresholds: tuple[float, float] | None
    class_fractions: np.ndarray | None
    builtin_hdf: bool


def grid_properties(data: dict) -> GridProperties:
    """The :class:`GridProperties` of a position checkpoint's training grids.

    Parameters
    ----------
    data : dict
        The checkpoint's ``data`` section (the grid dataset's
        :meth:`~galaxy_core.data.prepared.PreparedDataset.description`).

    Checkpoints record ``cell_px``, ``size_thresholds_area`` and ``class_fractions``; for one
    saved before they were recorded whose grids are tiles of the built-in deep field they are
    measured again from its recorded grid options (the same catalogue and cuts, 1,024 tiles:
    :func:`galaxy_core.sky.grids.catalogue_grids`); otherwise what is missing is None
    (the cell size then defaults to :class:`GridOptions`'s) and the composer refuses the
    options that need it.

    Raises
    ------
    DataError
        ``data`` is not that of a grid dataset.
    """
    if data.get("kind") != "grid":
        raise DataError(f"grid_properties: the checkpoint was trained on {data.get('kind')!r} data, not grids")
    pre = data.get("preprocess") or {}
    builtin = data.get("source") == HDF_GRID_SOURCE
    cell_px = int(data.get("cell_px") or pre.get("cell_px") or GridOptions.cell_px)
    thr = data.get("size_thresholds_area")
    fractions = data.get("class_fractions")
    if builtin and (thr is None or fractions is None):
        opts = GridOptions(grid=int(pre.get("grid", 32)), cell_px=cell_px, classes=bool(pre.get("classes", True)),
                           thresholds=pre.get("thresholds", "terciles"), min_area=float(pre.get("min_area", MIN_AREA)))
        if thr is None:
            thr = size_thresholds(hdf_sources(min_area=opts.min_area)["area"], method=opts.thresholds)
        if fractions is None:
            fractions = grid_class_fractions(options=opts)
    return GridProperties(cell_px=cell_px, thresholds=None if thr is None else (float(thr[0]), float(thr[1])),
                          class_fractions=None if fractions is None else np.asarray(fractions, np.float64),
                          builtin_hdf=builtin)


def _rows(rows) -> str:
    """``data row 3`` / ``data rows 3, 7, 9 and 12 more`` for 0-based row indices."""
    rows = [int(r) + 1 for r in rows]
    more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
    return f"data row{'s' if len(rows) > 1 else ''} {', '.join(map(str, rows[:5]))}{more}"


def _catalogue_column(t, name: str, path: Path) -> np.ndarray:
    """Column ``name`` of a catalogue table as finite float64, or a DataError naming the rows."""
    col = t[name]
    if col.ndim != 1:
        raise DataError(f"{path}: column {name} holds arrays of shape {col.shape[1:]} per row; give one number per row")
    blank = np.flatnonzero(np.ma.getmaskarray(col))
    if blank.size:
        raise DataError(f"{path}: {name} is blank or missing in {_rows(blank)}; every source needs x, y and a size")
    values = np.asarray(col)
    if values.dtype.kind not in "iuf":
        def number(v) -> bool:
            try:
                float(v)
                return True
            except (TypeError, ValueError):
                return False

        items = [v.decode(errors="replace") if isinstance(v, bytes) else v for v in values.tolist()]
        bad = [i for i, v in enumerate(items) if not number(v)]
        if bad:
            raise DataError(f"{path}: {name} is not a number in {_rows(bad)} ({items[bad[0]]!r}); "
                            "give numbers in pixels")
        values = np.array([float(v) for v in items])
    values = values.astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise DataError(f"{path}: {name} is not finite ({values[bad[0]]}) in {_rows(bad)}; give a number in pixels")
    return values


def _far_positions(v: np.ndarray, axis: str, path: Path) -> None:
    """Raise DataError when more than half of the field along ``axis`` holds no source.

    The field a user catalogue describes runs from pixel 0 to its largest position, and tiles
    are cut anywhere in it; the command takes no field size, so positions are judged against
    each other: an empty band wider than half the field (a stray row far beyond the others, or
    positions offset far from 0) would make most tiles empty grids.
    """
    edges = np.concatenate([[-0.5], np.sort(v)])
    gaps = np.diff(edges)
    k = int(np.argmax(gaps))
    extent = edges[-1] + 0.5
    if gaps[k] <= 0.5 * extent or extent < 2:
        return
    if k == 0:
        raise DataError(f"{path}: no source has {axis} below {edges[1]:g}, so more than half of the field "
                        f"(0 to {edges[-1]:g} px) would be empty; positions are pixels from the field's first "
                        f"pixel: subtract the offset")
    far = np.flatnonzero(v > edges[k])
    raise DataError(f"{path}: {axis} = {v[far[0]]:g} in {_rows(far)} lies far beyond the other sources "
                    f"({axis} <= {edges[k]:g}), so more than half of the field would be empty; "
                    "remove or correct those rows")


def read_catalogue(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a user catalogue: a CSV or FITS table with ``x``, ``y`` (pix) and ``size`` or
    ``area`` (pix2) columns, one source per row. Column names are matched without regard to
    case (FITS's ``X``, ``Y``, ``SIZE``), an exact match first
    (:func:`galaxy_core.io.tables.column_name`).

    Positions are pixels of the field, 0 at the centre of its first pixel; the field runs from
    there to the largest x and y. Rows are numbered from 1, the header not counted.

    Raises
    ------
    DataError
        Missing or unreadable file (one line, not astropy's list of formats), missing columns
        (names those it has), no rows, a blank or missing cell, text or a non-finite value where
        a number belongs, a position below -0.5 (outside the field's first pixel), a size that is
        not positive, or positions that leave more than half of the field empty (a stray row far
        beyond the others, or an offset; see :func:`_far_positions`), or two columns whose names
        differ only in case where neither is the exact name. Each message names the file, the
        column and the rows.
    """
    from astropy.io.fits.verify import VerifyError
    from astropy.table import Table

    from galaxy_core.io.fits import is_fits_path
    from galaxy_core.io.tables import with_column_names

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such catalogue file" if not path.exists() else f"{path}: not a file")
    fmt = "fits" if is_fits_path(path) else "csv"
    try:
        t = Table.read(path, format=fmt)
    except (OSError, ValueError, TypeError, KeyError, IndexError, UnicodeDecodeError, VerifyError) as e:
        why = (str(e).strip().splitlines() or [type(e).__name__])[0].split(". ")[0]  # not astropy's format list
        why = re.sub(r"data line (\d+)", lambda m: f"data row {int(m[1]) + 1}", why)  # astropy counts from 0
        raise DataError(f"{path}: cannot read as a {fmt.upper()} table ({why}); "
                        "give a CSV or FITS table with x, y and size columns") from e
    t = with_column_names(t, ("x", "y", "size", "area"), where=str(path))
    size = "size" if "size" in t.colnames else "area" if "area" in t.colnames else None
    if "x" not in t.colnames or "y" not in t.colnames or size is None:
        raise DataError(f"{path}: a catalogue needs columns x, y and size (or area); it has {', '.join(t.colnames)}")
    if len(t) == 0:
        raise DataError(f"{path}: the catalogue has no rows; give at least one source (x, y, {size})")
    x, y, area = (_catalogue_column(t, c, path) for c in ("x", "y", size))
    for name, v in (("x", x), ("y", y)):
        bad = np.flatnonzero(v < -0.5)
        if bad.size:
            raise DataError(f"{path}: {name} = {v[bad[0]]:g} in {_rows(bad)} is negative; positions are pixels "
                            "of the field, 0 at its first pixel")
    bad = np.flatnonzero(area <= 0)
    if bad.size:
        raise DataError(f"{path}: {size} = {area[bad[0]]:g} in {_rows(bad)}; a size (area in pix2) must be positive")
    _far_positions(x, "x", path)
    _far_positions(y, "y", path)
    return {"x": x, "y": y, "area": area, "shape": (int(np.ceil(y.max())) + 1, int(np.ceil(x.max())) + 1)}


def catalogue_from_image(image: np.ndarray, *, nsigma: float = 2.0, n_pixels: int = 10) -> dict[str, np.ndarray]:
    """Segment an image (photutils, the recipe of :mod:`galaxy_core.data.hdf`) into a catalogue.

    Parameters
    ----------
    image : array (H, W) or (H, W, C), float or uint8
        The sky; colour images are averaged over channels.

    Returns
    -------
    dict
        ``x``, ``y`` centroids (pix), ``area`` (pix2), ``shape``.
    """
    from galaxy_core.sky.detect import detect

    img = np.asarray(image, float)
    if img.ndim == 3:
        img = img.mean(axis=-1)
    cat = detect(img, nsigma=nsigma, n_pixels=n_pixels)
    return {"x": cat["x"], "y": cat["y"], "area": cat["area"], "shape": img.shape}


def tile_grids(sources: dict[str, np.ndarray], opts: GridOptions) -> tuple[np.ndarray, dict]:
    """Grids of ``opts.count`` random tiles of a catalogue.

    Each tile is a ``tile_px`` square at a uniformly random offset inside the field, turned by
    a random element of the square's symmetry group; the galaxies inside are gridded.

    Returns
    -------
    grids : ndarray (count, 1, G, G), uint8
    info : dict
        ``thresholds`` (lo, hi) and ``mean_occupied`` (galaxies per grid).
    """
    h, w = sources["shape"]
    side = opts.tile_px
    if side > min(h, w):
        raise DataError(f"grid tiles of {side} px (grid {opts.grid} x cell_px {opts.cell_px}) do not fit in a "
                        f"{w} x {h} field; lower grid or cell_px")
    thr = size_thresholds(sources["area"], method=opts.thresholds, allow_empty=not opts.classes)
    cls = size_class(sources["area"], thr) if opts.classes else np.ones(len(sources["x"]), np.int64)
    rng = np.random.default_rng(opts.seed)
    out = np.empty((opts.count, 1, opts.grid, opts.grid), np.uint8)
    for n in range(opts.count):
        x0, y0 = rng.integers(0, w - side + 1), rng.integers(0, h - side + 1)
        k = int(rng.integers(0, 8))
        x, y = sources["x"] - x0, sources["y"] - y0
        inside = (x >= -0.5) & (x < side - 0.5) & (y >= -0.5) & (y < side - 0.5)
        tx, ty = dihedral_xy(x[inside], y[inside], k, side)
        out[n, 0] = catalogue_to_grid(tx, ty, cls[inside], grid=opts.grid, cell_px=opts.cell_px)
    return out, {"thresholds": list(thr), "mean_occupied": float((out > 0).sum() / opts.count)}


def _write_grids(root: Path, grids: np.ndarray, opts: GridOptions, info: dict, *, name: str, source: str, replace: bool,
                 key: str) -> PreparedDataset:
    manifest = {
        "name": name,
        "key": key,
        "source": source,
        "channels": ["class"],
        "kind": "grid",
        "num_classes": opts.num_classes,
        "class_names": list(CLASS_NAMES[: opts.num_classes]) if opts.classes else ["empty", "galaxy"],
        "grid": asdict(opts) | {"version": GRID_VERSION},
        "cell_px": opts.cell_px,
        "preprocess": {"grid": opts.grid, "cell_px": opts.cell_px, "classes": opts.classes,
                       "thresholds": opts.thresholds, "min_area": opts.min_area},
        "size_thresholds_area": info["thresholds"],
        "mean_occupied": info["mean_occupied"],
        **({"sources_below_min_area": info["sources_below_min_area"]} if "sources_below_min_area" in info else {}),
        "stretch": None,
    }
    return write_prepared(root, grids, manifest, replace=replace)


def prepare_hdf_grids(opts: GridOptions = GridOptions(), *, rebuild: bool = False) -> PreparedDataset:
    """Grid dataset of random tiles of the built-in ``hdf`` deep-field catalogue (cached).

    Returns
    -------
    PreparedDataset
        images (count, 1, G, G) uint8 class ids; manifest ``num_classes``, ``cell_px``,
        ``size_thresholds_area``; stored under ``cache_dir()/prepared/hdfgrid-<key>``.
    """
    from galaxy_core.paths import cache_dir

    key = cache_key({"source": "hdf", "opts": asdict(opts), "version": GRID_VERSION})
    root = cache_dir() / "prepared" / f"hdfgrid-{key}"
    if not rebuild and (root / "manifest.json").exists():
        try:
            return open_prepared(root)
        except DataError:  # damaged (a copy cut short): make it again
            pass
    grids, info = tile_grids(hdf_sources(min_area=opts.min_area), opts)
    name = "hdf_grid_classes" if opts.classes else "hdf_grid"
    return _write_grids(root, grids, opts, info, name=name, source=HDF_GRID_SOURCE, key=key, replace=rebuild)


def prepare_catalogue_grids(sources: dict[str, np.ndarray], out: str | os.PathLike, opts: GridOptions, *,
                            source: str, name: str | os.PathLike | None = None) -> PreparedDataset:
    """Grid dataset of random tiles of a user catalogue (:func:`read_catalogue` or
    :func:`catalogue_from_image`), written to the folder ``out``. Sources with an area below
    ``opts.min_area`` are left out first, as the built-in field's are (``galaxygan sky grids``
    applies the 50 pix2 cut to the detections of an ``--image`` and none to a ``--catalogue``,
    the user's own selection); the manifest records the cut and how many sources it removed.

    Raises
    ------
    DataError
        Too few sources for the size thresholds, size terciles that leave a class empty (see
        :func:`size_thresholds`), or a field smaller than a tile; the message
        starts with ``name`` (the input file) when given. Nothing is written then.
    """
    n = len(sources["x"])  # the size cut the built-in field's grids have (and the manifest records)
    keep = np.asarray(sources["area"], np.float64) >= opts.min_area
    sources = {k: (np.asarray(v)[keep] if np.ndim(v) == 1 and len(v) == n else v) for k, v in sources.items()}
    try:
        if not keep.any():
            raise DataError(f"none of its {n} sources has an area of at least min_area = {opts.min_area:g} pix2")
        grids, info = tile_grids(sources, opts)
    except DataError as e:
        if name is None:
            raise
        raise DataError(f"{name}: {e}") from e
    info["sources_below_min_area"] = int(n - keep.sum())
    key = cache_key({"source": source, "opts": asdict(opts), "version": GRID_VERSION})
    # a folder the user names: what is there is replaced, whatever it holds
    return _write_grids(Path(out), grids, opts, info, name=Path(out).name, source=source, key=key, replace=True)


# --------------------------------------------------------------------------- grid statistics


GRID_BLOCKS = (2, 4, 8)  # block sides (cells) of the counts-in-cells statistic


def grid_statistics(grids: np.ndarray, *, blocks: tuple[int, ...] = GRID_BLOCKS) -> dict:
    """Summary statistics of a set of grids, to compare a position model with its data.

    Parameters
    ----------
    grids : array (n, G, G), int
        Class per cell, 0 = empty (any number of classes; every class > 0 counts as occupied).
    blocks : tuple of int
        Block sides ``b`` (cells, dividing ``G``) of the counts-in-cells statistic.

    Returns
    -------
    dict
        ``occupancy`` mean and ``occupancy_sd`` (over grids) of the fraction of occupied
        cells; ``class_fractions`` the fraction of all cells holding each class 0..K-1;
        ``var_over_mean`` ``{b: ...}`` the variance over the mean of the number of occupied
        cells in ``b x b`` blocks (all blocks of all grids; independent cells with occupancy
        ``p`` give ``1 - p``, clustering more, an evenly spread pattern less: the
        counts-in-cells test of point-process statistics); ``neighbour_fraction`` the
        fraction of occupied cells with at least one occupied cell among their 8 neighbours
        (independent cells: ``1 - (1 - p)^m`` for a cell with ``m`` neighbours inside the
        grid, averaged over the grid); ``independent`` the last two for independent cells of
        the same occupancy.

    Raises
    ------
    ValueError
        ``grids`` is not (n, G, G), or a block side does not divide ``G``.
    """
    from scipy import ndimage

    g = np.asarray(grids)
    if g.ndim != 3 or g.shape[1] != g.shape[2] or len(g) == 0:
        raise ValueError(f"grid_statistics: expected (n, G, G) grids, got shape {g.shape}")
    n, side = g.shape[0], g.shape[1]
    occ = g > 0
    p = float(occ.mean())
    k = max(int(g.max()) + 1, 2)
    out = {"n": int(n), "occupancy": p, "occupancy_sd": float(occ.mean(axis=(1, 2)).std()),
           "class_fractions": (np.bincount(np.clip(g, 0, None).ravel(), minlength=k) / g.size).tolist(),
           "var_over_mean": {}}
    for b in blocks:
        if side % b:
            raise ValueError(f"grid_statistics: block side {b} does not divide the grid side {side}")
        counts = occ.reshape(n, side // b, b, side // b, b).sum(axis=(2, 4)).ravel()
        out["var_over_mean"][int(b)] = float(counts.var() / counts.mean()) if counts.mean() > 0 else float("nan")
    ring = np.ones((3, 3), np.int32)
    ring[1, 1] = 0
    neighbours = ndimage.convolve(occ.astype(np.int32), ring[None], mode="constant")
    out["neighbour_fraction"] = float((neighbours[occ] > 0).mean()) if occ.any() else float("nan")
    m = ndimage.convolve(np.ones((side, side), np.int32), ring, mode="constant")  # neighbours inside the grid
    out["independent"] = {"var_over_mean": 1.0 - p, "neighbour_fraction": float(np.mean(1 - (1 - p) ** m))}
    return out


def grid_distance(model: dict, data: dict) -> float:
    """One number for how far a position model's grid statistics are from the data's (0 = the
    same): ``|ln(occupancy ratio)|`` + the mean ``|ln(fraction ratio)|`` over the occupied
    classes (for more than one) + the mean absolute difference of the counts-in-cells
    variance/mean over the block sizes + the absolute difference of the neighbour fractions
    (:func:`grid_statistics` dicts in; an empty model grid set scores inf)."""
    eps = 1e-6
    if model["occupancy"] <= 0:
        return float("inf")
    d = abs(np.log(model["occupancy"] / max(data["occupancy"], eps)))
    fm, fd = np.asarray(model["class_fractions"][1:]), np.asarray(data["class_fractions"][1:])
    if len(fd) > 1 and len(fm) == len(fd):
        d += float(np.mean(np.abs(np.log(np.maximum(fm, eps) / np.maximum(fd, eps)))))
    blocks = [b for b in data["var_over_mean"] if b in model["var_over_mean"]]
    d += float(np.mean([abs(model["var_over_mean"][b] - data["var_over_mean"][b]) for b in blocks]))
    d += abs(model["neighbour_fraction"] - data["neighbour_fraction"])
    return float(d)


# --------------------------------------------------------------------------- the field's grid catalogue


@functools.lru_cache(maxsize=4)
def catalogue_grids(*, classes: bool = True, count: int = 1024, options=None) -> np.ndarray:
    """``count`` random grids of the deep field's grid catalogue
    (:func:`galaxy_core.sky.grids.tile_grids`, seed 0: the catalogue and cuts of the
    ``hdf_grid_classes`` / ``hdf_grid`` datasets the position models were trained on), measured
    once per process. ``options`` (a :class:`~galaxy_core.sky.grids.GridOptions`) replaces the
    default grid options (its ``count`` and ``seed`` are replaced by ``count`` and 0, and
    ``classes`` is then ignored).

    Returns
    -------
    ndarray (count, G, G), int64, read-only
        Class per cell: 0..3 (``classes``) or 0/1.
    """

    opts = GridOptions(classes=classes) if options is None else options
    opts = dataclasses.replace(opts, count=count, seed=0)
    grids, _ = tile_grids(hdf_sources(min_area=opts.min_area), opts)
    out = np.asarray(grids, np.int64).reshape(len(grids), *grids.shape[-2:])
    out.flags.writeable = False
    return out


@functools.lru_cache(maxsize=4)
def grid_class_fractions(*, classes: bool = True, count: int = 1024, options=None) -> np.ndarray:
    """Fraction of the cells of the deep field's grids that hold each class.

    Over the ``count`` grids of :func:`catalogue_grids` (default grid options, or ``options``;
    then ``options.classes`` sets the classes).

    Returns
    -------
    ndarray (4,) or (2,), float64
        ``[empty, small, medium, large]`` (``classes``) or ``[empty, occupied]``; sums to 1.
        For the field: about ``[0.878, 0.040, 0.036, 0.046]``.
    """
    grids = catalogue_grids(classes=classes, count=count, options=options)
    k = (4 if classes else 2) if options is None else options.num_classes
    return np.bincount(grids.ravel(), minlength=k)[:k] / grids.size
