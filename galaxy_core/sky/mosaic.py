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
        Truth table with ``cls`` (the class given to a conditional model, else 0).
    """
    from tqdm.auto import tqdm

    if not (0 < height <= MAX_SIDE and 0 < width <= MAX_SIDE):
        raise ValueError(f"mosaic size must be 1..{MAX_SIDE} pixels per side, got {height} x {width}")
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
        stamps = source(np.maximum(cls, 1), rng)
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
    meta = {"seed": seed, "height": height, "width": width, "density": density, "size_sigma": size_sigma,
            "model": str(model.path), "model_id": model.id, "background": background_meta(bg, modulate)}
    return Sky(image=image, truth=_truth_table(rows), background_sum=bg_sum, meta=meta)


# --------------------------------------------------------------------------- outputs


def sky_to_rgb8(image: np.ndarray) -> np.ndarray:
    """(3, H, W) field-unit sky -> (H, W, 3) uint8 display image: the real field's stretch
    (values in [0, 1] shown linearly, each band clipped on its own), so composed skies look like
    the deep field; the same 8-bit values the realism scorer reads
    (:func:`galaxy_core.metrics.realism.levels_8bit`)."""
    from galaxy_core.metrics.realism import levels_8bit

    return np.moveaxis(levels_8bit(image), 0, -1)


def write_sky(sky: Sky, out: str | os.PathLike, *, png: bool = True, fits: bool = True, csv: bool = True
              ) -> list[Path]:
    """Write ``OUT.png`` (display, clipped linear), ``OUT.fits`` (primary: (3, H, W) float32
    R, G, B in field units; extension ``TRUTH``: the truth table) and ``OUT.csv`` (truth).

    Returns the written paths.
    """
    from astropy.io import fits as afits

    from galaxy_core.io.atomic import atomic_open

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    written = []
    if png:
        from PIL import Image

        with atomic_open(out.with_suffix(".png")) as f:
            Image.fromarray(sky_to_rgb8(sky.image)).save(f, format="PNG")
        written.append(out.with_suffix(".png"))
    if fits:
        hdr = afits.Header()
        hdr["BUNIT"] = ("field", "8-bit band value / 255, not calibrated")
        for i, b in enumerate(("R", "G", "B"), 1):
            hdr[f"BAND{i}"] = b
        for k in ("seed", "height", "width", "cell_px", "jitter"):
            if k in sky.meta:
                hdr[k.upper()[:8]] = sky.meta[k]
        hdr["BKGSUM"] = (sky.background_sum, "background sum, all bands")
        mod = (sky.meta.get("background") or {}).get("modulation")
        if mod:  # how the sky level and the noise vary across the image (SkyModulation)
            hdr["BKGLEVSD"] = (mod["level_sd"], "sky level sd at a pixel, field units")
            hdr["BKGNOISD"] = (mod["noise_sd"], "sd of ln noise gain at a pixel")
            hdr["BKGRHO"] = (mod["rho"], "correlation of level and noise fields")
            hdr["BKGSCALE"] = (mod["scale"], "[pix] smoothing sigma of the fields")
        for k, v in (sky.meta.get("config") or {}).items():  # the composer options (regenerate from the header)
            if k not in ("out", "detect", "realism", "radius"):
                hdr[f"HIERARCH SKY {k.upper()}"] = v if isinstance(v, (bool, int, float)) else str(v)[:48]
        hdul = afits.HDUList([afits.PrimaryHDU(np.asarray(sky.image, np.float32), header=hdr),
                              afits.table_to_hdu(sky.truth)])
        hdul[1].name = "TRUTH"
        with atomic_open(out.with_suffix(".fits")) as f:
            hdul.writeto(f)
        written.append(out.with_suffix(".fits"))
    if csv:
        import io

        from galaxy_core.io.atomic import atomic_write_text

        buf = io.StringIO()
        sky.truth.write(buf, format="ascii.csv")
        atomic_write_text(out.with_suffix(".csv"), buf.getvalue())
        written.append(out.with_suffix(".csv"))
    return written
