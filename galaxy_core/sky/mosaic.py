"""Wide mosaics from any single-galaxy checkpoint, and writing skies to PNG, FITS and CSV.

A mosaic places ``density * H * W`` generated galaxies at uniformly random positions, each
turned by a random angle and resized by a log-normal size factor (total flux kept: the resized
stamp is rescaled to the flux it had), and ADDS their flux images
(:func:`galaxy_core.sky.stamps.galaxy_flux`) onto a noisy background. Galaxies are generated
in batches, so memory holds the sky and one batch; ``memmap`` puts the sky in a file for the
largest sizes (8000 x 8000 x 3 float32 is 768 MB).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from galaxy_core.sky.background import Background, background_meta, hdf_background, modulation_fields
from galaxy_core.sky.compose import _truth_table, ModelGalaxies, Sky
from galaxy_core.sky.stamps import add_stamp

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


def compose_mosaic(model, *, height: int, width: int, density: float = 4.9e-4, size_sigma: float = 0.25,
                   seed: int = 0, background: Background | None = None, batch: int = 256,
                   memmap: str | os.PathLike | None = None, modulate: bool = True, progress: bool = True) -> Sky:
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
    memmap : path, optional
        Hold the sky in this ``.npy`` file instead of memory.
    modulate : bool
        Vary the sky level and the noise amplitude across the sky as the background's
        ``modulation`` says (:class:`~galaxy_core.sky.background.SkyModulation`, its own random
        stream; fields on an 8 px grid, 2 x 1000² values for an 8000 px sky).

    Returns
    -------
    Sky
        Truth table with ``cls`` (the class given to a conditional model, else 0). The model's
        bands fill the sky's three planes by the display rule of
        :func:`galaxy_core.io.render.rgb_planes` (g, r, i -> planes i, r, g = R, G, B), named in
        ``meta["bands"]``; ``meta["unit_note"]`` says what the pixel values are.

    Raises
    ------
    ConfigError
        A size beyond :data:`MAX_SIDE`, a density or size spread that is negative or not
        finite, a position model (cell classes, not galaxies), or a ``memmap`` file that
        already exists (it is never overwritten).
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
    bg = background or hdf_background()
    ss = np.random.SeedSequence([seed, 7]).spawn(2)
    bg_rng, rng = np.random.default_rng(ss[0]), np.random.default_rng(ss[1])
    if memmap is not None:
        image = np.lib.format.open_memmap(Path(memmap), mode="w+", dtype=np.float32, shape=(3, height, width))
    else:
        image = np.empty((3, height, width), np.float32)
    bg_sum = 0.0
    fields = modulation_fields(bg, height, width, seed, modulate)
    for y in range(0, height, 1024):  # background in strips
        h = min(1024, height - y)
        strip = bg.draw((h, width), bg_rng, fields(y, 0, h, width))
        bg_sum += float(strip.sum(dtype=np.float64))
        image[:, y : y + strip.shape[1]] = strip
    n = int(rng.poisson(density * height * width))
    source = ModelGalaxies(model, batch=batch)
    rows = []
    bar = tqdm(total=n, desc="mosaic galaxies", unit="gal", disable=not progress)
    for start in range(0, n, batch):
        m = min(batch, n - start)
        cls = rng.integers(1, 4, m) if source.conditional else np.zeros(m, np.int64)
        stamps = source(np.maximum(cls, 1), rng)  # in the display's R, G, B planes (ModelGalaxies)
        xs, ys = rng.uniform(-0.5, width - 0.5, m), rng.uniform(-0.5, height - 0.5, m)
        angles, scales = rng.uniform(0, 360, m), np.exp(rng.normal(0, size_sigma, m))
        for st, x, y, a, s, c in zip(stamps, xs, ys, angles, scales, cls):
            st = transform_stamp(st, angle=a, scale=s)
            half = (st.shape[-1] - 1) / 2
            x0, y0 = int(round(x - half)), int(round(y - half))
            f = add_stamp(image, st, x0, y0)
            rows.append({"x": x0 + half, "y": y0 + half, "cls": int(c), "flux": float(f.sum()), "flux_r": f[0],
                         "flux_g": f[1], "flux_b": f[2], "tile": 0})
        bar.update(m)
    bar.close()
    bands = rgb_plane_names(model.channels)
    meta = {"seed": seed, "height": height, "width": width, "density": density, "size_sigma": size_sigma,
            "model": str(model.path), "model_id": model.id, "background": background_meta(bg, modulate),
            "bands": bands, "unit_note": _mosaic_unit_note(model, bands)}
    return Sky(image=image, truth=_truth_table(rows), background_sum=bg_sum, meta=meta)


def _mosaic_unit_note(model, bands: list[str]) -> str:
    """What a mosaic's pixel values are, for its FITS header."""
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


SKY_SUFFIXES = (".png", ".fits", ".csv")


def sky_output_path(out: str | os.PathLike, suffix: str) -> Path:
    """``OUT`` + ``suffix``: the suffix is added to the whole name (``run.v2`` -> ``run.v2.fits``,
    never ``run.fits``), except that an ``OUT`` already ending in one of :data:`SKY_SUFFIXES`
    loses that ending first (``sky.png`` -> ``sky.fits``)."""
    from galaxy_core.paths import with_suffix_of

    return with_suffix_of(out, suffix, SKY_SUFFIXES)


# header cards written from Sky.meta by name; the rest go to HIERARCH SKY cards
_SKY_CARDS = {"seed": "SEED", "height": "HEIGHT", "width": "WIDTH", "cell_px": "CELL_PX", "jitter": "JITTER"}
_NOT_CARDS = ("background", "config", "bands", "unit_note")
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
    cards["ROWORDER"] = ("top-down", "array row 0 = top row of the PNG")
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
    """Write ``OUT.png`` (display, clipped linear), ``OUT.fits`` (primary: (3, H, W) float32
    planes ``BAND1..3`` in field units; extension ``TRUTH``: the truth table) and ``OUT.csv``
    (truth). The suffixes are added to ``OUT``'s whole name (:func:`sky_output_path`).

    The FITS header holds what made the image: every composer option, the models' paths and
    ids (composed skies), the checkpoint, its id, density and size spread (mosaics) or the
    parameters (baselines), the background's variation, ``ORIGIN``, ``CREATOR`` (software and
    version) and ``DATE``. ``BUNIT`` is ``""`` (dimensionless: a fraction of the 8-bit scale);
    the comment cards say what the values and the truth table's pixel convention are.

    The files are written to temporary files side by side and renamed only once all of them
    are complete, so a file that cannot be made leaves every earlier output in place (no new
    PNG beside an old FITS).

    Returns the written paths.
    """
    import contextlib

    from astropy.io import fits as afits

    from galaxy_core.io.atomic import atomic_open

    targets = [sky_output_path(out, s) for s, on in zip(SKY_SUFFIXES, (png, fits, csv)) if on]
    with contextlib.ExitStack() as stack:  # every temporary file is renamed at the end, or none
        files = {p.suffix: stack.enter_context(atomic_open(p)) for p in targets}
        if png:
            from PIL import Image

            Image.fromarray(sky_to_rgb8(sky.image)).save(files[".png"], format="PNG")
        if fits:
            truth = afits.table_to_hdu(sky.truth)
            truth.name = "TRUTH"
            _add_comments(truth.header, "x, y: array column and row counted from 0 (FITS pixel = x + 1, y + 1). "
                                        "flux: sum over the three planes; flux_r, flux_g, flux_b: planes 1, 2, 3 "
                                        "(BAND1..3 of the primary), in the primary's pixel unit.")
            primary = afits.PrimaryHDU(np.asarray(sky.image, np.float32), header=sky_header(sky))
            afits.HDUList([primary, truth]).writeto(files[".fits"])
        if csv:
            import io

            buf = io.StringIO()
            sky.truth.write(buf, format="ascii.csv")
            files[".csv"].write(buf.getvalue().encode("utf-8"))
    return targets
