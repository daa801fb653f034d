"""Compose sparse skies: galaxies added onto a noisy background where a grid says.

Stage two of the two-stage sparse-sky model (ETH Zurich, "Generative models for sparse
cosmological images"): a position source gives a G x G grid of cell classes per sky tile of
``G * cell_px`` pixels, and a galaxy source draws one galaxy per occupied cell, placed at the
cell centre plus sub-cell jitter. The sky is built tile by tile (so any size can be composed;
only the output array is held) and is deterministic for a seed: every tile has its own
random streams, from :class:`numpy.random.SeedSequence` ``(seed, tile)``.

Flux convention: images are in the ``hdf`` field's units, each band of the 8-bit composite
scaled to [0, 1] (not calibrated). A galaxy's flux image is its patch minus the patch's
border level, kept inside a segmentation mask (:func:`~galaxy_core.sky.stamps.galaxy_flux`); it is ADDED to the sky,
never written over it, so ``sky.sum() == background.sum() + truth["flux"].sum()`` exactly
(up to float rounding), with the flux that fell outside the sky left out of the truth table.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

from galaxy_core.data.hdf import HDF_VERSION
from galaxy_core.data.prepared import file_hash
from galaxy_core.io.atomic import cached_arrays
from galaxy_core.paths import cache_dir
from galaxy_core.sky.background import (BACKGROUND_VERSION, Background, background_meta, hdf_background,
                                        modulation_fields)
from galaxy_core.sky.calibrate import (apply_transfer, map_pixels, pixel_quantiles, real_stamp_reference,
                                       sharpness_transfer)
from galaxy_core.sky.grids import (GridOptions, catalogue_grids, grid_properties, grid_to_catalogue, hdf_sources,
                                   sample_cells, size_thresholds)
from galaxy_core.sky.stamps import add_stamp, detection_areas, galaxy_flux, real_galaxy_flux, real_stamp_fluxes, training_stamps


class GalaxySource(Protocol):
    def __call__(self, cls: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(n, 3, S, S) float32 flux images for galaxies of classes ``cls`` (n,) in 1..3."""


def generate_stamps(model, cls: np.ndarray, seed: int, *, batch: int = 256) -> np.ndarray:
    """(n, C, S, S) float32 model-range stamps of a galaxy checkpoint for classes ``cls`` (n,)
    in 1..3, latents drawn with ``seed``; a conditional model gets label ``cls - 1``."""
    import torch

    g = torch.Generator().manual_seed(seed)
    z = model.family.sample_latents(model.model_cfg, len(cls), generator=g)
    labels = np.clip(np.asarray(cls) - 1, 0, model.num_classes - 1) if model.num_classes > 0 else None
    return model.generate(z, labels=labels, batch=batch)


class ModelGalaxies:
    """Galaxies from a single-galaxy checkpoint (:func:`galaxy_core.models.pretrained.load_pretrained`).

    A conditional model gets label ``cls - 1`` (small/medium/large); an unconditional one
    ignores the class. Latents are drawn from the tile's random stream. A model of survey
    bands fills the sky's R, G, B planes as the display does (g, r, i -> i, r, g:
    :func:`galaxy_core.io.render.rgb_planes`), as display values.

    The real stamps every calibration aims at are the ``hdf`` stamps the model was trained on
    (:func:`~galaxy_core.sky.stamps.training_stamps`: its resolution, and neighbours kept or replaced by sky).

    ``flux_match``: each galaxy's flux image is scaled so that its total flux has the rank in
    the real stamps' flux distribution that it has in the model's own (a monotone map
    calibrated once on :data:`CALIBRATION_SAMPLES` samples per class drawn with a fixed seed;
    per size class for a conditional model, over all stamps for an unconditional one). Shapes
    and the brightness order are the model's; the flux scale is the data's.

    ``sharpen``: each flux image is filtered with the radial transfer function that gives the
    model's galaxies the real stamps' mean power spectrum
    (:func:`galaxy_core.sky.calibrate.sharpness_transfer`; total flux kept exactly).
    ``pixel_match``: then every galaxy pixel's band mean is mapped monotonically onto the real
    stamps' galaxy-pixel distribution (:func:`galaxy_core.sky.calibrate.map_pixels`; colours
    kept). Both are calibrated once on :data:`CALIBRATION_SAMPLES` x 2 samples drawn with a
    fixed seed (classes cycling for a conditional model), each on the output of the steps
    before it (``flux_match``, then ``sharpen``, then ``pixel_match``). The sharpening and
    pixel calibration of a checkpoint file is kept in the cache (``cache_dir()/sky``, keyed by
    the checkpoint's bytes, the options and :data:`GALAXY_CALIBRATION_VERSION`), so a new
    process (the app, each ``galaxygan sky compose``) reads it instead of measuring it again.
    """

    def __init__(self, model, *, batch: int = 256, flux_match: bool = False, sharpen: bool = False,
                 pixel_match: bool = False):
        self.model, self.batch = model, batch
        self.conditional = model.num_classes > 0
        self.flux_match = flux_match
        self.sharpen, self.pixel_match = sharpen, pixel_match
        self._calibration: dict | None = None
        self._shape_cal: dict | None = None
        self.stamps = training_stamps(model.meta, model.resolution)

    def _raw(self, cls: np.ndarray, seed: int) -> np.ndarray:
        from galaxy_core.io.render import rgb_planes

        x = generate_stamps(self.model, cls, seed, batch=self.batch)
        return galaxy_flux(rgb_planes(x, self.model.channels)[0])  # survey bands in the display's R, G, B planes

    def calibration(self) -> dict:
        """``{class: (sorted model fluxes, sorted real fluxes)}``, class 0 = all (unconditional)."""
        if self._calibration is None:
            real = real_stamp_fluxes(**self.stamps)
            classes = (1, 2, 3) if self.conditional else (0,)
            cal = {}
            for c in classes:
                cls = np.full(CALIBRATION_SAMPLES, max(c, 1), np.int64)
                model_f = np.sort(self._raw(cls, seed=c).sum(axis=(1, 2, 3), dtype=np.float64))
                cal[c] = (model_f, real[c])
            self._calibration = cal
        return self._calibration

    def __call__(self, cls, rng):
        cls = np.asarray(cls, np.int64)
        if len(cls) == 0:
            r = self.model.resolution
            return np.zeros((0, 3, r, r), np.float32)
        flux = self._matched(cls, self._raw(cls, int(rng.integers(2**62))))
        return self._shaped(flux)

    def shape_calibration(self) -> dict:
        """``{"transfer": T(k) or None, "model_q", "real_q": pixel quantiles or None}``,
        measured once on a fixed-seed sample (see the class docstring)."""
        if self._shape_cal is None:
            keys = ["transfer"] * self.sharpen + ["model_q", "real_q"] * self.pixel_match
            path = self._shape_cache_path()
            found = self._measure_shape() if path is None else cached_arrays(path, self._measure_shape, keys=keys)
            self._shape_cal = {k: found.get(k) for k in ("transfer", "model_q", "real_q")}
        return self._shape_cal

    def _measure_shape(self) -> dict:
        """The arrays of :meth:`shape_calibration` that the options call for, measured."""
        cal = {}
        if self.sharpen or self.pixel_match:
            n = 2 * CALIBRATION_SAMPLES
            cls = (np.arange(n) % 3 + 1).astype(np.int64)
            flux = self._matched(cls, self._raw(cls, seed=17))
            if self.sharpen:
                cal["transfer"] = sharpness_transfer(flux, **self.stamps)
                flux = apply_transfer(flux, cal["transfer"])
            if self.pixel_match:
                cal["model_q"] = pixel_quantiles(flux)
                cal["real_q"] = real_stamp_reference(**self.stamps)["pixels"]
        return cal

    def _shape_cache_path(self) -> Path | None:
        """Where :meth:`shape_calibration` is cached: None for a model without a checkpoint file
        or with nothing to calibrate."""
        ckpt = getattr(self.model, "path", None)
        if ckpt is None or not (self.sharpen or self.pixel_match):
            return None
        ckpt = Path(ckpt)
        try:
            files = [file_hash(ckpt.with_suffix(".json")), file_hash(ckpt.with_suffix(".safetensors"))]
        except OSError:
            return None
        key = hashlib.sha256(json.dumps([GALAXY_CALIBRATION_VERSION, BACKGROUND_VERSION, HDF_VERSION, files,
                                         self.flux_match, self.sharpen, self.pixel_match, self.stamps,
                                         CALIBRATION_SAMPLES], sort_keys=True).encode()).hexdigest()[:16]
        return cache_dir() / "sky" / f"galaxy-calibration-{key}.npz"

    def _shaped(self, flux: np.ndarray) -> np.ndarray:
        if not (self.sharpen or self.pixel_match):
            return flux

        cal = self.shape_calibration()
        if cal["transfer"] is not None:
            flux = apply_transfer(flux, cal["transfer"])
        if cal["model_q"] is not None:
            flux = map_pixels(flux, cal["model_q"], cal["real_q"])
        return flux

    def _matched(self, cls: np.ndarray, flux: np.ndarray) -> np.ndarray:
        if not self.flux_match:
            return flux
        cal = self.calibration()
        total = flux.sum(axis=(1, 2, 3), dtype=np.float64)
        scale = np.ones(len(cls))
        for c, (model_f, real_f) in cal.items():
            sel = (cls == c) if self.conditional else np.ones(len(cls), bool)
            u = np.interp(total[sel], model_f, np.linspace(0.0, 1.0, len(model_f)))
            target = np.quantile(real_f, u)
            ratio = np.where(total[sel] > 1e-6, target / np.maximum(total[sel], 1e-6), 1.0)
            scale[sel] = np.clip(ratio, 1 / MAX_FLUX_SCALE, MAX_FLUX_SCALE)
        return (flux * scale[:, None, None, None]).astype(np.float32)


CALIBRATION_SAMPLES = 512
MAX_FLUX_SCALE = 3.0
# bump when ModelGalaxies.shape_calibration or what it calls (sharpness_transfer, pixel_quantiles,
# real_stamp_reference, galaxy_flux) changes: the cached calibrations are then measured again
GALAXY_CALIBRATION_VERSION = "galaxy-calibration/2"  # 2: survey-band models in display plane order


class ClassMatchedGalaxies:
    """Galaxies of the size class each cell asks for, from a source that ignores classes.

    For ``n`` requested galaxies, ``candidates * n`` are drawn from ``source`` (any
    :class:`GalaxySource`, e.g. an unconditional :class:`ModelGalaxies`), each is given the
    class its :func:`~galaxy_core.sky.stamps.detection_areas` area falls in (the position model's thresholds:
    :func:`galaxy_core.sky.grids.size_thresholds` of the catalogue the grids are made from,
    by default the ``hdf`` terciles), and every cell takes an unused candidate of its class;
    where the class has run out, the unused candidate whose area is nearest the class's range.
    So the grid's size classes reach the sky even when the galaxy model is unconditional (a
    conditional source is asked for the requested classes, ``candidates`` times over).

    The area is measured without deblending, so a galaxy drawn with a neighbour joined to it
    counts as one large source; it is exact for models of isolated galaxies
    (``data.neighbours = "sky"``). The thresholds default to those of the ``hdf`` grids; give
    a position model's own when it was trained on another catalogue. Measured on the composer's
    default it leaves the classifier test where it was (``docs/families/sky.md``).
    """

    def __init__(self, source, *, candidates: int = 4, thresholds: tuple[float, float] | None = None):
        if candidates < 1:
            raise ValueError(f"candidates must be at least 1, got {candidates}")
        self.source, self.candidates = source, int(candidates)
        if thresholds is None:
            thresholds = size_thresholds(hdf_sources()["area"])
        self.thresholds = (float(thresholds[0]), float(thresholds[1]))

    def classes_of(self, areas: np.ndarray) -> np.ndarray:
        """(n,) int64 classes 1..3 of areas (pix2): below ``lo``, below ``hi``, the rest."""
        lo, hi = self.thresholds
        return np.where(areas < lo, 1, np.where(areas < hi, 2, 3)).astype(np.int64)

    def __call__(self, cls, rng):
        cls = np.asarray(cls, np.int64)
        pool = self.source(np.tile(cls, self.candidates), rng)  # a conditional source gets the asked classes
        if len(cls) == 0:
            return pool
        areas = detection_areas(pool).astype(np.float64)
        have = self.classes_of(areas)
        lo, hi = self.thresholds
        ranges = {1: (-np.inf, lo), 2: (lo, hi), 3: (hi, np.inf)}
        free = np.ones(len(pool), bool)
        pick = np.empty(len(cls), np.int64)
        for i, c in enumerate(cls):
            c = int(np.clip(c, 1, 3))
            match = np.flatnonzero(free & (have == c))
            if len(match):
                j = match[0]
            else:
                a, b = ranges[c]
                dist = np.where(areas < a, a - areas, np.where(areas >= b, areas - b, 0.0))
                j = np.flatnonzero(free)[np.argmin(dist[free])]
            pick[i] = j
            free[j] = False
        return pool[pick]


class StampGalaxies:
    """Real ``hdf`` 32 px stamps of the requested size class, drawn at random (a reference);
    ``neighbours`` as in :func:`galaxy_core.data.hdf.prepare_hdf` (kept, or replaced by sky)."""

    def __init__(self, *, resolution: int = 32, neighbours: str = "keep"):
        from galaxy_core.data.hdf import prepare_hdf

        ds = prepare_hdf(resolution=resolution, neighbours=neighbours, progress=False)
        self.flux = real_galaxy_flux(resolution, neighbours)  # above the field's sky level
        names = np.asarray(ds.catalog["size_class"]).astype(str)
        self.by_class = {c: np.flatnonzero(names == n) for c, n in enumerate(("small", "medium", "large"), 1)}

    def __call__(self, cls, rng):
        idx = [rng.choice(self.by_class[int(c)]) for c in np.asarray(cls)]
        return self.flux[np.asarray(idx, np.int64)] if idx else self.flux[:0]


class CatalogueGrids:
    """Grids of the deep field's own catalogue (a reference for the position model): each call
    returns one of the ``count`` grids of :func:`galaxy_core.sky.grids.catalogue_grids`
    (random 512 px tiles of the ``hdf`` grid catalogue, the grids the position models were
    trained on), classes 0..3 (``classes``) or occupancy 0/1."""

    def __init__(self, *, classes: bool = True, count: int = 1024):
        self.grids = catalogue_grids(classes=classes, count=count)  # (count, G, G), shared, read-only
        self.grid = self.grids.shape[-1]
        self.cell_px = DEFAULT_CELL_PX  # the default grid options' cells, which these grids use

    def __call__(self, rng):
        return self.grids[int(rng.integers(len(self.grids)))].copy()


class ModelPositions:
    """Grids from a position checkpoint: one generated grid per tile.

    ``mode`` ``"argmax"`` takes the most likely class per cell, ``"sample"`` draws it. An
    occupancy model (2 classes) gives class 1 per occupied cell; ``class_mix`` (3 weights)
    then assigns small/medium/large at random.

    ``match_classes``: the occupied cells of each class are thinned at random so that the
    fraction of cells holding that class is, on average, that of the grids the model was
    trained on (``properties.class_fractions``): a class the model draws too often keeps each
    of its cells with probability ``data fraction / model fraction``; a class it draws too
    rarely is kept whole. The model's fractions are measured once on
    :data:`CALIBRATION_GRIDS` grids drawn with fixed seeds. Only for a model with size classes
    (4 classes) or an occupancy model (2 classes, then against the data's occupancy).

    ``properties`` (:func:`galaxy_core.sky.grids.grid_properties`) are those of the model's
    own training grids: ``cell_px`` (the cell size :func:`compose_sky` uses by default), the
    size thresholds and the class fractions.
    """

    def __init__(self, model, *, mode: str = "sample", class_mix: tuple[float, float, float] | None = None,
                 match_classes: bool = False):

        self.model, self.mode = model, mode
        self.class_mix = class_mix
        self.grid = model.resolution
        self.match_classes = match_classes
        self.properties = grid_properties(model.meta.get("data", {}))
        self.cell_px = self.properties.cell_px
        self._keep: np.ndarray | None = None

    def _cells(self, rng):
        import torch

        g = torch.Generator().manual_seed(int(rng.integers(2**62)))
        z = self.model.family.sample_latents(self.model.model_cfg, 1, generator=g)
        return sample_cells(self.model.generate(z), mode=self.mode, rng=rng)[0]

    def keep_probabilities(self) -> np.ndarray:
        """(K,) probability that an occupied cell of class k is kept (``[0]`` unused, 1.0)."""
        if self._keep is None:
            k = self.model.model_cfg.num_classes
            if k not in (2, 4):
                raise ValueError(f"match_classes: the position model has {k} classes; the data's class fractions "
                                 "exist for 2 (occupancy) or 4 (empty + three size classes)")
            data_f = self.properties.class_fractions
            if data_f is None or len(data_f) != k:
                name = getattr(getattr(self.model, "path", None), "name", "the position model")
                raise ValueError(f"match_classes: {name} does not record the class fractions of the grids it was "
                                 "trained on (saved before they were recorded); retrain it, or compose without "
                                 "matching the classes")
            grids = np.stack([self._cells(np.random.default_rng([CALIBRATION_SEED, i]))
                              for i in range(CALIBRATION_GRIDS)])
            model_f = np.bincount(np.clip(grids, 0, k - 1).ravel(), minlength=k) / grids.size
            keep = np.ones(k)
            keep[1:] = np.minimum(1.0, data_f[1:] / np.maximum(model_f[1:], 1e-12))
            self._keep = keep
        return self._keep

    def __call__(self, rng):
        cells = self._cells(rng)
        if self.match_classes:
            keep = self.keep_probabilities()
            u = rng.random(cells.shape)
            cells = np.where((cells > 0) & (u >= keep[np.clip(cells, 0, len(keep) - 1)]), 0, cells)
        return assign_classes(cells, self.class_mix, rng) if self.class_mix is not None else cells


CALIBRATION_GRIDS = 256
CALIBRATION_SEED = 23


def assign_classes(cells: np.ndarray, class_mix, rng: np.random.Generator) -> np.ndarray:
    """Occupied cells get class 1..3 drawn with probabilities ``class_mix`` (normalised)."""
    p = np.asarray(class_mix, float)
    p = p / p.sum()
    out = np.zeros_like(cells)
    occ = cells > 0
    out[occ] = rng.choice(np.arange(1, len(p) + 1), size=int(occ.sum()), p=p)
    return out


class RandomPositions:
    """Each cell occupied independently with probability ``p``; classes from ``class_mix``."""

    def __init__(self, *, grid: int = 32, p: float = 0.13, class_mix=(1.0, 1.0, 1.0)):
        self.grid, self.p, self.class_mix = grid, p, class_mix

    @classmethod
    def like(cls, grids) -> "RandomPositions":
        """Independent cells at the occupancy and class mix of ``grids`` (a sequence of (G, G)
        int grids, e.g. a position model's): what is left of them without their arrangement
        (the paper's first experiment)."""
        grids = np.asarray(grids)
        counts = np.bincount(grids[grids > 0].ravel(), minlength=4)[1:4] + 1e-9
        return cls(grid=int(grids.shape[-1]), p=float((grids > 0).mean()), class_mix=tuple(counts / counts.sum()))

    def __call__(self, rng):
        cells = (rng.random((self.grid, self.grid)) < self.p).astype(np.int64)
        return assign_classes(cells, self.class_mix, rng)


class FixedPositions:
    """The same grid for every tile."""

    def __init__(self, cells: np.ndarray):
        self.cells = np.asarray(cells, np.int64)
        self.grid = self.cells.shape[0]

    def __call__(self, rng):
        return self.cells


# --------------------------------------------------------------------------- placement


@dataclass
class Sky:
    """A composed sky.

    Attributes
    ----------
    image : ndarray (C, H, W), float32
        R, G, B in field units (see module docstring); a mosaic in linear flux
        (:func:`galaxy_core.sky.mosaic.compose_mosaic`) holds its model's C bands in the model's
        unit instead (``meta["bands"]``, ``meta["unit"]``).
    truth : astropy.table.Table
        One row per placed galaxy: ``x``, ``y`` (centre, pix), ``cls`` (1..3; -1 = a faint
        source below the grid catalogue's size cut, see ``compose_sky(faint=...)``; -2 = a star,
        ``compose_sky(stars=...)``), ``flux`` (sum over planes of the flux added inside the
        sky), one flux column per plane (``flux_r``, ``flux_g``, ``flux_b``; a mosaic in linear
        flux: ``flux_<band>``), ``tile``.
    background_sum : float
        Sum of the background over all bands and pixels.
    meta : dict
        Seed, size, cell size and the sources used.
    """

    image: np.ndarray
    truth: object
    background_sum: float
    meta: dict = field(default_factory=dict)


def _truth_table(rows: list[dict], planes: Sequence[str] = ("r", "g", "b"), unit: str | None = None):
    """The truth table of placed sources; ``flux_<plane>`` columns in the image's plane order,
    described and in ``unit`` (:func:`describe_truth`)."""
    from astropy.table import Table

    fluxes = tuple(f"flux_{b}" for b in planes)
    names = ("x", "y", "cls", "flux", *fluxes, "tile")
    dtypes = (np.float64, np.float64, np.int16, np.float64, *(np.float64,) * len(fluxes), np.int32)
    t = Table({n: np.array([r[n] for r in rows], dtype=d) for n, d in zip(names, dtypes)})
    return describe_truth(t, unit)


TRUTH_DESCRIPTIONS = {  # short enough for a FITS card's comment (47 characters)
    "x": "array column of the centre, from 0",
    "y": "array row of the centre, from 0",
    "cls": "1-3 class asked; 0 none; -1 faint; -2 star",
    "flux": "flux added, summed over the planes",
    "tile": "index of the tile it was drawn for",
    "size": "drawn size before clipping",
    "peak": "drawn peak (band sum) before clipping",
}


def describe_truth(table, unit: str | None = None):
    """Give a truth table's columns their descriptions and units, in place; returns it.

    ``x``, ``y`` (and a baseline's ``size``) are in ``pix``; the flux columns (``flux``,
    ``flux_<plane>``, a baseline's ``peak``) get ``unit`` (the image's ``BUNIT``; None for
    field units, which have no physical unit: their descriptions say "field units").
    ``cls`` is the size class 1-3 (small, medium, large) asked of the galaxy: its grid cell's in a
    composed sky (a galaxy model that ignores classes, the default without ``size_match``, need not
    draw a galaxy of that size), a conditional model's label in a mosaic; 0 none asked (a mosaic of
    an unconditional model), -1 a faint source, -2 a star.
    """
    import astropy.units as u

    flux_unit = None if not unit else u.Unit(unit, parse_strict="silent")
    for name in table.colnames:
        col = table[name]
        if name.startswith("flux_"):
            col.description = f"flux added to plane {name[5:]}"
        elif name in TRUTH_DESCRIPTIONS:
            col.description = TRUTH_DESCRIPTIONS[name]
        if name in ("x", "y", "size"):
            col.unit = "pix"
        elif name == "flux" or name.startswith("flux_") or name == "peak":
            if flux_unit is not None:
                col.unit = flux_unit
                col.meta["unit_text"] = unit  # written as named (the image's BUNIT) where FITS has no such unit
            else:
                col.description += ", field units"
    return table


DEFAULT_CELL_PX = GridOptions.cell_px  # cell side of position sources that record none (random, fixed grids)


def stamp_corner(centre: np.ndarray, cell_start: np.ndarray, cell_px: int, side: int) -> np.ndarray:
    """Integer corner of a ``side`` px stamp placed at ``centre``, kept in its cell.

    The stamp goes to the whole pixel nearest ``centre - (side - 1) / 2``, so its centre
    (``corner + (side - 1) / 2``) moves by up to half a pixel. A position near a cell's edge
    could thereby cross into the neighbouring cell; the corner is moved back by one pixel
    then, so the placed centre, which the truth table records, re-grids
    (:func:`~galaxy_core.sky.grids.catalogue_to_grid`) into the cell the grid asked for.

    Parameters
    ----------
    centre : array (n,), float
        Wanted centres along one axis (pix, 0-based, pixel centres at integers).
    cell_start : array (n,), int
        First pixel of each centre's cell along that axis (cell ``c`` of side ``cell_px``
        holds the centres in ``[cell_start - 0.5, cell_start + cell_px - 0.5)``).
    cell_px, side : int
        Cell and stamp sides (pix).

    Returns
    -------
    ndarray (n,), int64
    """
    half = (side - 1) / 2
    corner = np.round(np.asarray(centre, np.float64) - half).astype(np.int64)
    placed = corner + half
    lo, hi = np.asarray(cell_start) - 0.5, np.asarray(cell_start) + cell_px - 0.5
    corner = corner - (placed >= hi) + (placed < lo)
    return corner


def resolve_cell_px(positions, cell_px: int | None) -> int:
    """The cell side to compose ``positions`` at: its own ``cell_px`` when it has one (a
    position model's training grids), else ``cell_px``, else :data:`DEFAULT_CELL_PX`. Raises
    ValueError when ``cell_px`` is given and differs from the source's own."""
    own = getattr(positions, "cell_px", None)
    if own is not None and cell_px is not None and int(cell_px) != int(own):
        raise ValueError(f"cell_px {cell_px} differs from the {own} px cells of the grids the position source "
                         "was made from; its galaxy density holds at that scale only (leave cell_px unset)")
    out = int(own if own is not None else cell_px if cell_px is not None else DEFAULT_CELL_PX)
    if out < 1:
        raise ValueError(f"cell_px must be a positive number of pixels, got {out}")
    return out


def compose_sky(*, height: int, width: int, positions: Callable[[np.random.Generator], np.ndarray],
                galaxies: GalaxySource | None, cell_px: int | None = None, jitter: float = 0.35,
                background: Background | None = None, faint=None, stars=None, seed: int = 0,
                modulate: bool = True, progress: bool | Callable[[int, int], None] = False) -> Sky:
    """Compose a sky tile by tile from a position source and a galaxy source.

    Parameters
    ----------
    height, width : int
        Sky size in pixels (any size; tiles of ``G * cell_px`` are stitched and the last ones
        cropped).
    positions : callable rng -> (G, G) int, with attribute ``grid`` (G)
        Cell classes for one tile (:class:`ModelPositions`, :class:`RandomPositions`,
        :class:`FixedPositions`).
    galaxies : callable (cls, rng) -> (n, 3, S, S), or None
        Flux images of the galaxies (:class:`ModelGalaxies`, :class:`StampGalaxies`); None
        composes the background alone (with the same random stream).
    cell_px : int, optional
        Cell side in sky pixels. Default: the position source's own ``cell_px`` (a position
        model's is that of its training grids, 16 for the shipped ones), else 16.
    jitter : float
        Sub-cell jitter of each position, fraction of a cell in [0, 0.5].
    background : Background, optional
        Default :func:`~galaxy_core.sky.background.hdf_background`.
    faint : callable ((h, w), rng) -> dict, optional
        Sources below the grid catalogue's size cut, added to each tile after its galaxies
        (:class:`galaxy_core.sky.calibrate.FaintSources`; its own random stream, the fourth
        child of the tile's seed sequence, so the other streams are unchanged); they enter
        the truth table with ``cls`` -1. Only with ``galaxies``.
    stars : callable ((h, w), rng) -> dict, optional
        Stars, added to each tile after the faint sources, the same way
        (:class:`galaxy_core.sky.calibrate.FieldStars`; the tile's fifth random stream);
        truth rows with ``cls`` -2. Only with ``galaxies``.
    seed : int
        The sky is a pure function of the seed and the sources.
    modulate : bool
        Vary the sky level and the noise amplitude across the sky as the background's
        ``modulation`` says (:class:`~galaxy_core.sky.background.SkyModulation`; drawn for the whole sky from its own random
        stream, so the other streams are unchanged). No effect on a background without one.
    progress : bool or callable (done, total) -> None
        True: a tqdm bar over the tiles; a callable is called after each tile's background
        and after each tile's galaxies (``total`` = 2 x tiles), e.g. to drive an app's bar.

    Returns
    -------
    Sky

    Raises
    ------
    ValueError
        ``cell_px`` differs from the position source's own (its galaxy density holds at its
        cell size only).
    """
    from tqdm.auto import tqdm

    cell_px = resolve_cell_px(positions, cell_px)
    bg = background or hdf_background()
    image = np.empty((3, height, width), np.float32)
    tile = int(positions.grid) * cell_px
    n_ty, n_tx = -(-height // tile), -(-width // tile)
    rows: list[dict] = []
    bg_sum = 0.0
    report = progress if callable(progress) else (lambda done, total: None)
    n_tiles = n_ty * n_tx
    fields = modulation_fields(bg, height, width, seed, modulate)
    for t in tqdm(range(n_ty * n_tx), desc="sky tiles", disable=progress is not True):
        ty, tx = divmod(t, n_tx)
        y_off, x_off = ty * tile, tx * tile
        bg_rng, pos_rng, gal_rng = (np.random.default_rng(s) for s in np.random.SeedSequence([seed, t]).spawn(3))
        h, w = min(tile, height - y_off), min(tile, width - x_off)
        back = bg.draw((h, w), bg_rng, fields(y_off, x_off, h, w))
        bg_sum += float(back.sum(dtype=np.float64))
        image[:, y_off : y_off + h, x_off : x_off + w] = back
        report(t + 1, 2 * n_tiles)
    for t in range(n_ty * n_tx):  # galaxies after every background, so stamps may cross tiles
        if galaxies is None:
            break
        ty, tx = divmod(t, n_tx)
        y_off, x_off = ty * tile, tx * tile
        _, pos_rng, gal_rng, faint_rng, star_rng = (np.random.default_rng(s)
                                                    for s in np.random.SeedSequence([seed, t]).spawn(5))
        cat = grid_to_catalogue(positions(pos_rng), cell_px=cell_px, jitter=jitter, rng=pos_rng)
        x, y = cat["x"] + x_off, cat["y"] + y_off
        inside = (x < width - 0.5) & (y < height - 0.5)
        x, y, cls = x[inside], y[inside], cat["cls"][inside]
        stamps = galaxies(cls, gal_rng)
        s = stamps.shape[-1]
        xs = stamp_corner(x, cat["col"][inside] * cell_px + x_off, cell_px, s)
        ys = stamp_corner(y, cat["row"][inside] * cell_px + y_off, cell_px, s)
        for x0, y0, ci, st in zip(xs.tolist(), ys.tolist(), cls, stamps):
            f = add_stamp(image, st, x0, y0)
            rows.append({"x": x0 + (s - 1) / 2, "y": y0 + (s - 1) / 2, "cls": int(ci), "flux": float(f.sum()),
                         "flux_r": f[0], "flux_g": f[1], "flux_b": f[2], "tile": t})
        h, w = min(tile, height - y_off), min(tile, width - x_off)
        for extra, extra_rng, label in ((faint, faint_rng, -1), (stars, star_rng, -2)):
            if extra is None:
                continue
            src = extra((h, w), extra_rng)
            for xi, yi, st in zip(src["x"] + x_off, src["y"] + y_off, src["stamps"]):
                fs = st.shape[-1]  # stamps may differ in size
                x0, y0 = int(np.round(xi)) - (fs - 1) // 2, int(np.round(yi)) - (fs - 1) // 2
                f = add_stamp(image, st, x0, y0)
                rows.append({"x": float(xi), "y": float(yi), "cls": label, "flux": float(f.sum()),
                             "flux_r": f[0], "flux_g": f[1], "flux_b": f[2], "tile": t})
        report(n_tiles + t + 1, 2 * n_tiles)
    meta = {"seed": seed, "height": height, "width": width, "cell_px": cell_px, "jitter": jitter,
            "tile_px": tile, "faint": faint is not None, "stars": stars is not None,
            "background": background_meta(bg, modulate)}
    return Sky(image=image, truth=_truth_table(rows), background_sum=bg_sum, meta=meta)
