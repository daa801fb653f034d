"""Wide mosaics from any single-galaxy checkpoint, and writing skies to PNG, FITS and CSV.

A mosaic places ``density * H * W`` generated galaxies at uniformly random positions, each
turned by a random angle and resized by a log-normal size factor (total flux kept: the resized
stamp is rescaled to the flux it had), and ADDS their flux images onto a noisy background.
Galaxies are generated in batches, so memory holds the sky and one batch; ``memmap`` puts the
sky in a file for the largest sizes (8000 x 8000 x 3 float32 is 768 MB).

Two kinds of sky, by what the model makes:

* a flux-calibrated model (trained on FITS fluxes through an invertible stretch, e.g. the
  ``sim`` g/r/i models) is composed in LINEAR flux, in its own bands and unit: each galaxy's
  output is taken back to flux (:meth:`Pretrained.to_flux`), its border median taken off
  (:func:`galaxy_core.sky.stamps.source_flux`), and the sources are added onto white noise with
  the model's own sky noise (measured on the borders of generated stamps). Overlapping galaxies
  add their fluxes, as they do on the sky; the FITS file is in the model's unit (``BUNIT``) and
  the PNG uses the model's own display (its stretch, reddest band to R).
* any other model (8-bit display images, as the ``hdf`` models) is composed in the deep
  field's units on its background model (:func:`galaxy_core.sky.stamps.galaxy_flux`), as the
  sky composer composes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from galaxy_core.sky.background import Background, background_meta, hdf_background, modulation_fields
from galaxy_core.sky.compose import _truth_table, generate_stamps, ModelGalaxies, Sky
from galaxy_core.sky.stamps import add_stamp, border_pixels, source_flux

MAX_SIDE = 8000


def transform_stamp(stamp: np.ndarray, *, angle: float, scale: float) -> np.ndarray:
    """Rotate (degrees, counter-clockwise) and resize a (C, S, S) flux stamp, keeping each
    band's total flux. Bilinear; the output side is odd-safe and grows to hold the turn."""
    from scipy import ndimage

    out = ndimage.rotate(stamp, angle, axes=(2, 1), reshape=True, order=1, mode="constant", cval=0.0)
    if scale != 1.0:
        out = ndimage.zoom(out, (1, scale, scale), order=1)
    before, after = stamp.sum(axis=(1, 2)), out.sum(axis=(1, 2))
    ratio = np.divide(before, after, out=np.zeros_like(before), where=np.abs(after) > 1e-12)
    return (out * ratio[:, None, None]).astype(np.float32)


NOISE_SAMPLES = 256  # generated stamps whose borders give a flux model's sky noise
NOISE_SEED = 0  # their latents' seed: the same noise for every mosaic of one checkpoint


class FluxGalaxies:
    """Galaxies of a flux-calibrated model in its own bands and unit (see module docstring).

    Parameters
    ----------
    model : Pretrained
        A model with ``physical`` data and an invertible stretch (:meth:`Pretrained.to_flux`).
    batch : int
        Generator batch size.
    """

    def __init__(self, model, *, batch: int = 256):
        self.model, self.batch = model, batch
        self.conditional = model.num_classes > 0

    def _flux(self, cls: np.ndarray, seed: int) -> np.ndarray:
        x = generate_stamps(self.model, cls, seed, batch=self.batch)
        return self.model.to_flux(x).astype(np.float32)  # (n, C, S, S) in the model's unit

    def __call__(self, cls: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(n, C, S, S) float32: the central source of each generated stamp, sky taken off."""
        return source_flux(self._flux(np.asarray(cls), int(rng.integers(2**62))))

    def noise_sigma(self) -> np.ndarray:
        """(C,) float64: each band's sky noise in the model's unit, the robust standard deviation
        (1.4826 x MAD) of the border pixels of :data:`NOISE_SAMPLES` stamps drawn with seed
        :data:`NOISE_SEED`, each taken about its own border median."""
        border = border_pixels(self._flux(np.ones(NOISE_SAMPLES, np.int64), NOISE_SEED))
        border = border - np.median(border, axis=-1, keepdims=True)  # (n, C, 4S - 4)
        flat = np.moveaxis(border, 1, 0).reshape(border.shape[1], -1).astype(np.float64)
        return 1.4826 * np.median(np.abs(flat), axis=-1)


def is_flux_model(model) -> bool:
    """Whether a mosaic of ``model`` is composed in linear flux: physical data through an
    invertible stretch (its output can be taken back to flux)."""
    from galaxy_core.io.stretch import stretch_from_dict

    try:
        return bool(model.physical) and stretch_from_dict(model.stretch) is not None
    except (KeyError, TypeError, ValueError):
        return False


def compose_mosaic(model, *, height: int, width: int, density: float = 4.9e-4, size_sigma: float = 0.25,
                   seed: int = 0, background: Background | None = None, batch: int = 256,
                   memmap: str | os.PathLike | None = None, modulate: bool = True, progress: bool = True,
                   flux: bool | None = None) -> Sky:
    """A wide sky of galaxies from a single-galaxy checkpoint (see module docstring).

    Parameters
    ----------
    model : Pretrained
        From :func:`galaxy_core.models.pretrained.load_pretrained`; 3-band output in [-1, 1]
        (a conditional model gets random size classes).
    height, width : int
        Up to :data:`MAX_SIDE` pixels each.
    density : float
        Galaxies per pixel (default: the deep field's, 4.9e-4).
    size_sigma : float
        Log-normal size factor ``exp(N(0, size_sigma))``.
    background : Background, optional
        The deep field's background model for display-value skies (default
        :func:`~galaxy_core.sky.background.hdf_background`); not used in linear flux.
    memmap : path, optional
        Hold the sky in this ``.npy`` file instead of memory.
    modulate : bool
        Vary the sky level and the noise amplitude across the sky as the background's
        ``modulation`` says (:class:`~galaxy_core.sky.background.SkyModulation`, its own random
        stream; fields on an 8 px grid, 2 x 1000² values for an 8000 px sky). Display-value
        skies only: the variation is the deep field's.
    flux : bool, optional
        Compose in linear flux (True) or in display values (False); default: in flux exactly
        when the model is flux-calibrated (:func:`is_flux_model`).

    Returns
    -------
    Sky
        Truth table with ``cls`` (the class given to a conditional model, else 0) and one
        flux column per image plane (``flux_<band>`` in linear flux; ``flux_r``, ``flux_g``,
        ``flux_b`` in display values, as the composer's). In linear flux the planes are the
        model's own bands in its unit (``meta["unit"]``) on white noise of
        ``meta["background"]["sigma"]`` per band, and ``meta["display"]`` says how
        :func:`sky_rgb8` draws it. In display values
        the model's bands fill the sky's three planes by the display rule of
        :func:`galaxy_core.io.render.rgb_planes` (g, r, i -> planes i, r, g = R, G, B). The
        planes are named in ``meta["bands"]``; ``meta["unit_note"]`` says what the values are.

    Raises
    ------
    ConfigError
        A size beyond :data:`MAX_SIDE`, a density or size spread that is negative or not
        finite, a position model (cell classes, not galaxies), ``flux=True`` for a model that
        is not flux-calibrated, or a ``memmap`` file that already exists (it is never
        overwritten).
    """
    from tqdm.auto import tqdm

    from galaxy_core.errors import ConfigError
    from galaxy_core.io.render import is_grid_channels, rgb_plane_names

    if not (0 < height <= MAX_SIDE and 0 < width <= MAX_SIDE):
        raise ConfigError(f"mosaic size must be 1..{MAX_SIDE} pixels per side, got {height} x {width}")
    if not (np.isfinite(density) and density >= 0 and np.isfinite(size_sigma) and size_sigma >= 0):
        raise ConfigError(f"mosaic density and size spread must be finite and >= 0, got {density} and {size_sigma}")
    if memmap is not None and Path(memmap).exists():
        raise ConfigError(f"{memmap}: already exists; the mosaic's memory-mapped sky needs a new file (it would "
                          "overwrite this one)")
    if is_grid_channels(model.channels):
        raise ConfigError(f"{model.name} is a position model (cell classes {', '.join(model.channels)}), not a "
                         "galaxy model; a mosaic needs a single-galaxy checkpoint (galaxygan sky compose uses position models)")
    in_flux = is_flux_model(model) if flux is None else bool(flux)
    if in_flux and not is_flux_model(model):
        trained_on = "8-bit images" if not model.physical else "fluxes through a stretch that cannot be inverted"
        raise ConfigError(f"{model.name} is not flux-calibrated (trained on {trained_on}); its mosaic can only be "
                          "composed in display values")
    ss = np.random.SeedSequence([seed, 7]).spawn(2)
    bg_rng, rng = np.random.default_rng(ss[0]), np.random.default_rng(ss[1])
    if in_flux:
        source = FluxGalaxies(model, batch=batch)
        sigma = source.noise_sigma()
        planes = [str(c) for c in model.channels]

        def draw(y: int, h: int) -> np.ndarray:
            return (bg_rng.standard_normal((len(planes), h, width), np.float32)
                    * sigma[:, None, None].astype(np.float32))
    else:
        bg = background or hdf_background()
        source = ModelGalaxies(model, batch=batch)
        planes = rgb_plane_names(model.channels)
        fields = modulation_fields(bg, height, width, seed, modulate)

        def draw(y: int, h: int) -> np.ndarray:
            return bg.draw((h, width), bg_rng, fields(y, 0, h, width))
    shape = (len(planes), height, width)
    if memmap is not None:
        image = np.lib.format.open_memmap(Path(memmap), mode="w+", dtype=np.float32, shape=shape)
    else:
        image = np.empty(shape, np.float32)
    bg_sum = 0.0
    for y in range(0, height, 1024):  # background in strips
        strip = draw(y, min(1024, height - y))
        bg_sum += float(strip.sum(dtype=np.float64))
        image[:, y : y + strip.shape[1]] = strip
    n = int(rng.poisson(density * height * width))
    names = planes if in_flux else ("r", "g", "b")  # display planes: the composer's truth columns
    columns = [f"flux_{b}" for b in names]
    rows = []
    bar = tqdm(total=n, desc="mosaic galaxies", unit="gal", disable=not progress)
    for start in range(0, n, batch):
        m = min(batch, n - start)
        cls = rng.integers(1, 4, m) if source.conditional else np.zeros(m, np.int64)
        stamps = source(np.maximum(cls, 1), rng)  # the sky's planes: model bands (flux) or display R, G, B
        xs, ys = rng.uniform(-0.5, width - 0.5, m), rng.uniform(-0.5, height - 0.5, m)
        angles, scales = rng.uniform(0, 360, m), np.exp(rng.normal(0, size_sigma, m))
        for st, x, y, a, s, c in zip(stamps, xs, ys, angles, scales, cls):
            st = transform_stamp(st, angle=a, scale=s)
            half = (st.shape[-1] - 1) / 2
            x0, y0 = int(round(x - half)), int(round(y - half))
            f = add_stamp(image, st, x0, y0)
            rows.append({"x": x0 + half, "y": y0 + half, "cls": int(c), "flux": float(f.sum()),
                         **dict(zip(columns, map(float, f))), "tile": 0})
        bar.update(m)
    bar.close()
    meta = {"seed": seed, "height": height, "width": width, "density": density, "size_sigma": size_sigma,
            "model": str(model.path), "model_id": model.id, "bands": planes,
            "unit_note": _mosaic_unit_note(model, planes, in_flux)}
    if in_flux:
        meta.update(unit=model.flux_unit, zero_point=(model.meta.get("data") or {}).get("zero_point"), background={
                        "kind": "white noise", "sigma": [float(v) for v in sigma], "unit": model.flux_unit,
                        "measured_on": f"border pixels of {NOISE_SAMPLES} generated stamps (seed {NOISE_SEED})"},
                    display={"stretch": model.stretch, "channels": planes})
    else:
        meta["background"] = background_meta(bg, modulate)
    truth = _truth_table(rows, names, unit=model.flux_unit if in_flux else None)
    return Sky(image=image, truth=truth, background_sum=bg_sum, meta=meta)


def _mosaic_unit_note(model, bands: list[str], in_flux: bool = False) -> str:
    """What a mosaic's pixel values are, for its FITS header."""
    if in_flux:
        unit = model.flux_unit or "the unit of its training data (not recorded)"
        return (f"Galaxies from {model.name} in linear flux: its bands {', '.join(bands)} (planes 1-{len(bands)}) in "
                f"{unit}, each galaxy's output taken back through its training stretch and its border median "
                "taken off, added (overlaps add their fluxes) onto white noise with the model's own sky noise "
                "(BKGSIG1..); sky level 0.")
    if [b.upper() for b in bands] == ["R", "G", "B"] and not model.physical:
        return FIELD_UNIT_NOTE
    stretch = (model.stretch or {}).get("type") or "no"
    unit = f" of {model.flux_unit}" if model.flux_unit else ""
    return (f"Galaxies from {model.name}: its output bands {', '.join(bands)} (planes 1-3) as display values "
            f"({stretch} stretch{unit}, mapped to 0..1, above each stamp's border), on the deep field's "
            "background model in field units (8-bit band value / 255); a picture, not flux-calibrated.")


# --------------------------------------------------------------------------- outputs


def sky_to_rgb8(image: np.ndarray) -> np.ndarray:
    """(3, H, W) field-unit sky -> (H, W, 3) uint8 display image: the real field's stretch
    (values in [0, 1] shown linearly, each band clipped on its own), so composed skies look like
    the deep field; the same 8-bit values the realism scorer reads
    (:func:`galaxy_core.metrics.realism.levels_8bit`)."""
    from galaxy_core.metrics.realism import levels_8bit

    return np.moveaxis(levels_8bit(image), 0, -1)


def sky_rgb8(sky: Sky, *, rows: int = 1024) -> np.ndarray:
    """(H, W, 3) uint8 display image of a sky: the field's stretch (:func:`sky_to_rgb8`) for
    field-unit skies; for a mosaic in linear flux (``meta["display"]``), the model's own display
    (its stretch, then :func:`galaxy_core.io.render.to_rgb`: reddest band to R), in strips of
    ``rows`` rows so an 8000 px sky never needs a float64 copy of itself."""
    display = sky.meta.get("display")
    if not display:
        return sky_to_rgb8(sky.image)
    from galaxy_core.io.render import to_rgb
    from galaxy_core.io.stretch import stretch_from_dict

    stretch = stretch_from_dict(display["stretch"])
    _, h, w = sky.image.shape
    out = np.empty((h, w, 3), np.uint8)
    for y in range(0, h, rows):
        x = np.clip(stretch.forward(np.asarray(sky.image[:, y : y + rows], np.float32)), -1, 1)
        out[y : y + rows] = to_rgb(x, display["channels"])
    return out


SKY_SUFFIXES = (".png", ".fits", ".csv")


def sky_output_path(out: str | os.PathLike, suffix: str) -> Path:
    """``OUT`` + ``suffix``: the suffix is added to the whole name (``run.v2`` -> ``run.v2.fits``,
    never ``run.fits``), except that an ``OUT`` already ending in one of :data:`SKY_SUFFIXES`
    loses that ending first (``sky.png`` -> ``sky.fits``)."""
    from galaxy_core.paths import check_output_stem, with_suffix_of

    return with_suffix_of(check_output_stem(out), suffix, SKY_SUFFIXES)


# header cards written from Sky.meta by name; the rest go to HIERARCH SKY cards
_SKY_CARDS = {"seed": "SEED", "height": "HEIGHT", "width": "WIDTH", "cell_px": "CELL_PX", "jitter": "JITTER"}
_NOT_CARDS = ("background", "config", "bands", "unit_note", "unit", "display", "zero_point")
_CONFIG_NOT_CARDS = ("out", "detect", "realism", "radius")  # outputs of the command, not of the image


def sky_header(sky: Sky):
    """The primary header (astropy ``Header``) of a composed sky, mosaic or baseline sky (see
    :func:`write_sky`)."""
    from galaxy_core.io.fits import provenance_header

    meta = sky.meta
    cards: dict = {}
    for k, key in _SKY_CARDS.items():
        if meta.get(k) is not None:
            cards[key] = meta[k]
    cards["BKGSUM"] = (sky.background_sum, "background sum, all bands")
    mod = (meta.get("background") or {}).get("modulation")
    if mod:  # how the sky level and the noise vary across the image (SkyModulation)
        cards["BKGLEVSD"] = (mod["level_sd"], "sky level sd at a pixel, field units")
        cards["BKGNOISD"] = (mod["noise_sd"], "sd of ln noise gain at a pixel")
        cards["BKGRHO"] = (mod["rho"], "correlation of level and noise fields")
        cards["BKGSCALE"] = (mod["scale"], "[pix] smoothing sigma of the fields")
    for k, v in meta.items():  # the rest of what made it: models and their ids, a mosaic's or baseline's parameters
        if k not in _SKY_CARDS and k not in _NOT_CARDS and v is not None:
            cards[f"SKY {k}"] = v
    for k, v in (meta.get("config") or {}).items():  # the composer options (regenerate from the header)
        if k not in _CONFIG_NOT_CARDS and v is not None:  # unset options are resolved in the cards above
            cards[f"SKY {k}"] = v
    if meta.get("display"):  # a mosaic in linear flux: its white noise, per plane
        for i, v in enumerate((meta.get("background") or {}).get("sigma") or (), start=1):
            cards[f"BKGSIG{i}"] = (v, f"sky noise sd, plane {i}, pixel unit")
    if meta.get("display") and meta.get("zero_point") is not None:  # flux in the model's unit: its zero point
        cards["ZP"] = float(meta["zero_point"])
    if meta.get("display"):  # linear flux in the model's unit (None: not recorded, no BUNIT card)
        hdr = provenance_header(bands=meta["bands"], header_cards=cards, bunit=meta.get("unit"))
    else:
        hdr = provenance_header(bands=meta.get("bands") or ("R", "G", "B"), header_cards=cards, bunit="")
        hdr.comments["BUNIT"] = "dimensionless; see the comment cards"
    _add_comments(hdr, meta.get("unit_note") or FIELD_UNIT_NOTE)
    _add_comments(hdr, "Pixel (x, y) of the TRUTH table is array column x, row y, counted from 0; "
                       "the FITS pixel is (x + 1, y + 1). The array is stored in the PNG's row order, "
                       "so viewers that draw FITS row 1 at the bottom show it upside down.")
    return hdr


def _add_comments(header, text: str) -> None:
    """``text`` as COMMENT cards broken between words (a card holds 72 characters)."""
    import textwrap

    for line in textwrap.wrap(text, 70):
        header.add_comment(line)


FIELD_UNIT_NOTE = ("Pixel values in field units: the deep field's 8-bit band value / 255 "
                   "(planes R, G, B of its display image), not flux-calibrated; truth fluxes are "
                   "sums of such values above the sky level.")


def write_sky(sky: Sky, out: str | os.PathLike, *, png: bool = True, fits: bool = True, csv: bool = True
              ) -> list[Path]:
    """Write ``OUT.png`` (:func:`sky_rgb8`), ``OUT.fits`` (primary: (C, H, W) float32 planes
    ``BAND1..C``; extension ``TRUTH``: the truth table) and ``OUT.csv`` (truth). The suffixes
    are added to ``OUT``'s whole name (:func:`sky_output_path`).

    The FITS header holds what made the image: every composer option, the models' paths and
    ids (composed skies), the checkpoint, its id, density and size spread (mosaics) or the
    parameters (baselines), the background's variation (or a flux mosaic's noise, ``BKGSIGn``),
    ``ORIGIN``, ``CREATOR`` (software and version) and ``DATE``. ``BUNIT`` is ``""``
    (dimensionless: a fraction of the 8-bit scale) for field-unit skies and the model's unit
    for a mosaic in linear flux (no ``BUNIT`` where that was not recorded); the comment cards
    say what the values and the truth table's pixel convention are.

    The files are written to temporary files side by side and renamed only once all of them
    are complete, so a file that cannot be made leaves every earlier output in place (no new
    PNG beside an old FITS).

    Returns the written paths.
    """
    import contextlib

    from astropy.io import fits as afits

    from galaxy_core.io.atomic import atomic_open
    from galaxy_core.io.fits import table_hdu

    targets = [sky_output_path(out, s) for s, on in zip(SKY_SUFFIXES, (png, fits, csv)) if on]
    with contextlib.ExitStack() as stack:  # every temporary file is renamed at the end, or none
        files = {p.suffix: stack.enter_context(atomic_open(p)) for p in targets}
        if png:
            from PIL import Image

            Image.fromarray(sky_rgb8(sky)).save(files[".png"], format="PNG")
        if fits:
            truth = table_hdu(sky.truth, "TRUTH")
            planes = [c for c in sky.truth.colnames if c.startswith("flux_")]
            _add_comments(truth.header, "x, y: array column and row counted from 0 (FITS pixel = x + 1, y + 1). "
                                        f"flux: sum over the {len(planes)} planes; {', '.join(planes)}: planes "
                                        f"1..{len(planes)} (BAND1..{len(planes)} of the primary), in the "
                                        "primary's pixel unit. cls: the size class 1-3 (small, medium, large) "
                                        "asked of the galaxy (its grid cell's; a model that ignores classes "
                                        "need not match it), 0 none asked, -1 a faint source, -2 a star.")
            primary = afits.PrimaryHDU(np.asarray(sky.image, np.float32), header=sky_header(sky))
            afits.HDUList([primary, truth]).writeto(files[".fits"])
        if csv:
            import io

            buf = io.StringIO()
            sky.truth.write(buf, format="ascii.csv")
            files[".csv"].write(buf.getvalue().encode("utf-8"))
    return targets
