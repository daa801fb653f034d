"""FITS images in, FITS cubes out.

Reading (:func:`read_fits_image`) accepts the layouts galaxy data usually comes in:

* a 2-D image in the primary HDU or the first image extension (one band);
* a 3-D cube ``(bands, H, W)`` in the primary or first image HDU;
* one band per image HDU (names from ``FILTER``/``BAND`` or ``EXTNAME``);
* one band per *file* (``obj001_g.fits``, ``obj001_r.fits``, ...), grouped by
  :func:`group_band_files` and stacked by the caller.

HDUs without image data (tables, empty primaries) and extensions whose ``EXTNAME`` marks them
as auxiliary (``ERR``, ``WHT``, ``MASK``, ``DQ``, ...) are skipped. Non-finite pixels are
replaced by the median of the finite pixels of their band and counted.

Writing (:func:`write_fits_cube`) is atomic (temporary file, fsync, rename) and records honest
header cards: the unit, band names, pixel scale, ``ORIGIN``, ``DATE`` and provenance.
"""

from __future__ import annotations

import gzip
import io
import logging
import math
import os
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from galaxy_core import __version__
from galaxy_core.errors import DataError
from galaxy_core.io.atomic import atomic_open, json_text

log = logging.getLogger(__name__)

FITS_SUFFIXES = (".fits.gz", ".fit.gz", ".fts.gz", ".fits.fz", ".fits", ".fit", ".fts", ".fz")
ORIGIN = "Galaxy GAN Studio"
MAX_LAST_AXIS_BANDS = 4  # a (H, W, C) cube with C <= this and H, W larger is read as C bands
_MAX_GZIP_BYTES = 2 << 30  # a .gz FITS file decompressing to more than this is refused

# EXTNAMEs that carry no band name of their own.
_GENERIC_EXTNAMES = {"", "PRIMARY", "SCI", "IMAGE", "DATA", "COMPRESSED_IMAGE", "FLUX"}
# EXTNAMEs of auxiliary images that must not be read as bands.
_AUX_EXTNAMES = {
    "ERR", "ERROR", "SIGMA", "RMS", "NOISE", "WHT", "WEIGHT", "IVAR", "INVVAR", "VAR",
    "VARIANCE", "MASK", "BADPIX", "DQ", "FLAGS", "CTX", "CON", "EXP", "EXPMAP", "EXPOSURE",
    "PSF", "BKG", "BACKGROUND", "SAMP", "TIME", "SEGM", "SEGMAP",
}  # fmt: skip

# Approximate effective wavelengths (nm) of named bands, used only to order grouped files
# blue to red. Case matters: SDSS r is not Johnson R.
_BAND_WAVELENGTH_NM = {
    "FUV": 154, "NUV": 231, "u": 355, "U": 365, "B": 445, "g": 475, "V": 551, "r": 622,
    "R": 658, "i": 763, "I": 806, "z": 905, "Z": 880, "y": 1000, "Y": 1020, "J": 1250,
    "H": 1650, "Ks": 2150, "K": 2200, "W1": 3400, "W2": 4600, "W3": 12000, "W4": 22000,
}  # fmt: skip
# HST/JWST-style filter names such as F435W, F814W, F160W, F150W2, F658N, F850LP.
_FILTER_RE = re.compile(r"F\d{3,4}(?:W2|LP|[WMNX])", re.IGNORECASE)
_BAND_FILE_RE = re.compile(r"^(?P<stem>.+?)[_\-.](?P<band>[A-Za-z0-9]{1,6})$")


class FitsImage(tuple):
    """Result of :func:`read_fits_image`; unpacks as ``data, bands, header``.

    Attributes
    ----------
    data : ndarray, float32, (C, H, W)
        Pixel values in the file's units (``BUNIT``), non-finite pixels replaced.
    bands : list of str
        One name per channel, in array order.
    header : astropy.io.fits.Header
        Copy of the header of the (first) HDU the pixels came from.
    nan_replaced : list of int
        Per band, how many non-finite pixels were replaced by the band's median.
    path : Path
        The file read.
    index : int or None
        The image's place in a file of several (a ``(N, C, H, W)`` cube), else None.
    """

    def __new__(cls, data, bands, header, *, nan_replaced, path, index=None):
        self = super().__new__(cls, (data, bands, header))
        self.nan_replaced = list(nan_replaced)
        self.path = Path(path)
        self.index = index
        return self

    def __getnewargs_ex__(self):  # lets pickle (and st.cache_data) rebuild it
        return tuple(self), {"nan_replaced": self.nan_replaced, "path": self.path, "index": self.index}

    @property
    def data(self) -> np.ndarray:
        return self[0]

    @property
    def bands(self) -> list[str]:
        return self[1]

    @property
    def header(self) -> fits.Header:
        return self[2]

    @property
    def num_nan_replaced(self) -> int:
        """Total number of non-finite pixels replaced, over all bands."""
        return int(sum(self.nan_replaced))


def is_fits_path(path: str | os.PathLike) -> bool:
    """True when the name ends in a FITS suffix (``.fits``, ``.fit``, ``.fits.gz``, ``.fz``, ...)."""
    return Path(path).name.lower().endswith(FITS_SUFFIXES)


def fits_stem(path: str | os.PathLike) -> str:
    """File name without its FITS suffix: ``obj001_g.fits.gz`` -> ``obj001_g``."""
    name = Path(path).name
    lower = name.lower()
    for suffix in FITS_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


# --------------------------------------------------------------------------- reading


def read_fits_image(path: str | os.PathLike, index: int | None = None) -> FitsImage:
    """Read the image data of a FITS file as a ``(C, H, W)`` float32 array.

    Parameters
    ----------
    path : path
        A FITS file (``.fits``, ``.fit``, ``.fts``, optionally gzip- or tile-compressed).
    index : int, optional
        Which image of a file that holds several: a ``(N, C, H, W)`` cube (``NAXIS4 = N``), as
        ``galaxygan sample`` writes ``samples.fits``. Counted from 0. Required when ``N > 1``;
        :func:`read_fits_images` reads them all.

    Returns
    -------
    FitsImage
        Unpacks as ``data, bands, header``: ``data`` is float32 ``(C, H, W)`` in the file's
        units; ``bands`` names the channels; ``header`` is a copy of the header of the first
        image HDU. ``.nan_replaced`` gives the per-band count of non-finite pixels that were
        replaced by the median of that band's finite pixels; ``.index`` is the image's place
        in a multi-image cube (None for a file of one image).

    Raises
    ------
    DataError
        The file is unreadable or corrupt, holds no image data (only tables, empty HDUs or a
        1-D array), holds data with more than four (non-degenerate) axes, bands of different
        shapes, a band with no finite pixel, or a blank band (every pixel the same value); it
        holds several images and ``index`` is missing or out of range.

    Notes
    -----
    The first image HDU decides the layout: a 4-D array is ``N`` images of ``C`` bands; a 3-D cube is read alone (a cube whose last numpy
    axis, ``NAXIS1``, has at most :data:`MAX_LAST_AXIS_BANDS` entries while the other two are
    longer is an ``(H, W, C)`` array as numpy writes an RGB image, and is read as C bands), with band names from
    ``BAND1..BANDn``, a comma-separated ``BANDS`` card, or ``FILTER1..FILTERn``; a 2-D image is
    stacked with every further 2-D image HDU, each named by ``FILTER``/``BAND`` or a
    non-generic ``EXTNAME``. Names that are missing or repeated fall back to ``band1..bandn``.
    """
    path = Path(path)
    data, bands, header = _read_planes(path)
    if data.ndim == 4:
        n = data.shape[0]
        if index is None:
            raise DataError(f"{path}: holds {n} images (a cube of shape {data.shape}: images, bands, height, "
                            "width); choose one by its index (counted from 0), or put the file in a folder, "
                            "which reads every image")
        if not 0 <= index < n:
            raise DataError(f"{path}: holds {n} images; index {index} is out of range (0 to {n - 1})")
        data = np.ascontiguousarray(data[index])
    elif index not in (None, 0):
        raise DataError(f"{path}: holds one image; index {index} is out of range (only 0)")
    else:
        index = None
    label = path if index is None else f"{path} [image {index}]"
    nan_replaced = _replace_non_finite(data, bands, label)
    return FitsImage(data, bands, header, nan_replaced=nan_replaced, path=path, index=index)


def read_fits_images(path: str | os.PathLike, *, bad: list | None = None) -> list[FitsImage]:
    """Every image of a FITS file: one for an ordinary image or cube, ``N`` for a
    ``(N, C, H, W)`` cube (``.index`` 0..N-1), as ``galaxygan sample`` writes ``samples.fits``.

    Raises as :func:`read_fits_image`. An image of a multi-image cube with a blank band or a
    band with no finite pixel raises too, unless ``bad`` is a list: then that image is left
    out and ``(index, message)`` is appended to ``bad``.
    """
    path = Path(path)
    data, bands, header = _read_planes(path)
    if data.ndim == 3:
        return [FitsImage(data, bands, header, nan_replaced=_replace_non_finite(data, bands, path), path=path)]
    out = []
    for i in range(data.shape[0]):
        d = np.ascontiguousarray(data[i])
        try:
            nan_replaced = _replace_non_finite(d, bands, f"{path} [image {i}]")
        except DataError as e:
            if bad is None:
                raise
            bad.append((i, str(e)))
            continue
        out.append(FitsImage(d, bands, header, nan_replaced=nan_replaced, path=path, index=i))
    return out


def fits_image_count(path: str | os.PathLike) -> int:
    """How many images :func:`read_fits_image` finds in a file (``N`` of a 4-D cube, else 1).

    Reads the headers only (a gzip file is decompressed). Raises DataError as
    :func:`read_fits_image` does for a file that cannot be opened.
    """
    path = Path(path)
    try:
        with fits.open(_fits_source(path), memmap=False) as hdul:
            for hdu in hdul:
                if not isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)):
                    continue
                if str(hdu.header.get("EXTNAME", "")).strip().upper() in _AUX_EXTNAMES:
                    continue
                shape = tuple(hdu.shape)  # from the header; the pixels are not read
                if len(shape) < 2 or 0 in shape:
                    continue
                while len(shape) > 3 and shape[0] == 1:
                    shape = shape[1:]
                return shape[0] if len(shape) == 4 else 1
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"{path}: cannot read as FITS ({type(e).__name__}: {e}); "
                        "check the file is complete and really FITS, or remove it") from e
    return 1


def _read_planes(path: Path) -> tuple[np.ndarray, list[str], fits.Header]:
    """Open a FITS file and find its image planes: float32 (C, H, W) or (N, C, H, W)."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            source = _fits_source(path)
            # a plain file is memory-mapped: each image is converted once into its float32 array, so
            # reading takes about the result's size, not three times it (astropy's read, a byte-swap,
            # a copy). astropy cannot memory-map scaled integers (BSCALE, BZERO, BLANK): those are
            # read into memory, as every gzip file is.
            planes = None
            if isinstance(source, Path):
                with fits.open(source, memmap=True) as hdul:
                    if not _has_scaled_images(hdul):
                        planes = _image_planes(hdul, path)
            if planes is None:
                with fits.open(source, memmap=False) as hdul:
                    planes = _image_planes(hdul, path)
        for w in caught:
            log.debug("%s: %s", path, w.message)
    except DataError:
        raise
    except Exception as e:  # astropy raises OSError, ValueError, TypeError... on bad files
        raise DataError(
            f"{path}: cannot read as FITS ({type(e).__name__}: {e}); "
            "check the file is complete and really FITS, or remove it"
        ) from e
    return planes


def _has_scaled_images(hdul: fits.HDUList) -> bool:
    """Whether an uncompressed image HDU of an open file declares integer scaling (headers only)."""
    return any(isinstance(h, (fits.PrimaryHDU, fits.ImageHDU)) and
               any(k in h.header for k in ("BSCALE", "BZERO", "BLANK")) for h in hdul)


def _fits_source(path: Path):
    """What ``fits.open`` reads: the path, or for gzip files the checked, decompressed bytes.

    astropy streams ``.gz`` files itself and, given a damaged one (a flipped byte in the
    compressed data), can loop for ever looking for a header's END card. Decompressing here
    first checks the gzip CRC, so a damaged file fails at once with a clear error, and
    bounds the memory a hostile file can claim.
    """
    if not path.name.lower().endswith(".gz"):
        return path
    with gzip.open(path, "rb") as f:
        data = f.read(_MAX_GZIP_BYTES + 1)
    if len(data) > _MAX_GZIP_BYTES:
        raise DataError(f"{path}: decompresses to more than {_MAX_GZIP_BYTES >> 30} GiB; "
                        "decompress it yourself (an uncompressed file has no such limit)")
    return io.BytesIO(data)


def _image_planes(hdul: fits.HDUList, path: Path) -> tuple[np.ndarray, list[str], fits.Header]:
    """Find the image HDUs of an open file and stack them to float32 (C, H, W)."""
    images = []  # (array, header) of every usable image HDU, in file order
    one_d = []  # shapes of 1-D arrays met (a spectrum or a flattened image is no image)
    for hdu in hdul:
        if not isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)):
            continue
        extname = str(hdu.header.get("EXTNAME", "")).strip().upper()
        if extname in _AUX_EXTNAMES:
            log.debug("%s: skipping auxiliary HDU %s", path, extname)
            continue
        data = hdu.data
        if data is not None and data.ndim == 1 and data.size:
            one_d.append(data.shape[0])
        if data is None or data.size == 0 or data.ndim < 2:
            continue
        images.append((_squeeze_leading(data, path), hdu.header))
    if not images and one_d:
        raise DataError(f"{path}: holds a 1-D array of {one_d[0]} values (NAXIS = 1), not an image; "
                        "a spectrum or a flattened image cannot be read as one. Reshape it to (H, W) or "
                        "(bands, H, W) and write it again")
    if not images:
        raise DataError(f"{path}: no image data in any HDU (only tables or empty HDUs); "
                        "point at a file holding a 2-D image or a (bands, H, W) cube")
    first, header = images[0]
    if first.ndim == 3 and first.shape[-1] <= MAX_LAST_AXIS_BANDS < min(first.shape[:2]):
        # (H, W, C) as numpy writes an RGB array (NAXIS1 = C): a cube of H "bands" each
        # C pixels wide is no image; take the short last axis as the bands
        log.info("%s: cube of shape %s read as %d bands of %d x %d (bands on the last numpy axis, NAXIS1)",
                 path, first.shape, first.shape[-1], *first.shape[:2])
        first = np.moveaxis(first, -1, 0)
    if min(first.shape[-2:]) < 2:  # (1, N) or (C, 1, N): a row of values, e.g. a flattened image
        raise DataError(f"{path}: holds an array of shape {first.shape}, one pixel high or wide, not an image; "
                        "reshape it to (H, W) or (bands, H, W) and write it again")
    if first.ndim in (3, 4):
        if len(images) > 1:
            log.debug("%s: using the cube in the first image HDU, ignoring %d more", path,
                      len(images) - 1)
        data = _to_float32(first)  # (C, H, W), or (N, C, H, W): N images as `galaxygan sample` writes them
        return data, _cube_band_names(header, data.shape[-3]), header.copy()
    if any(a.ndim != 2 for a, _ in images):
        raise DataError(f"{path}: mixes 2-D images and 3-D cubes across HDUs; "
                        "keep one layout per file")
    shapes = {a.shape for a, _ in images}
    if len(shapes) > 1:
        raise DataError(f"{path}: image HDUs have different shapes {sorted(shapes)}; "
                        "every band of one galaxy must have the same pixel grid")
    data = np.empty((len(images),) + first.shape, np.float32)  # (C, H, W)
    for c, (a, _) in enumerate(images):
        data[c] = _to_float32(a)
    names = [_hdu_band_name(h) for _, h in images]
    return data, _unique_or_default(names), header.copy()


def _squeeze_leading(data: np.ndarray, path: Path) -> np.ndarray:
    """Drop leading length-1 axes beyond the third; a 4-D array is (images, bands, H, W);
    more real axes is an error."""
    while data.ndim > 3 and data.shape[0] == 1:
        data = data[0]
    if data.ndim > 4:
        raise DataError(f"{path}: image data has shape {data.shape} (more than 4 axes); "
                        "expected a 2-D image, a (bands, H, W) cube or (images, bands, H, W)")
    return data


def _to_float32(a: np.ndarray) -> np.ndarray:
    """Scaled FITS pixels (any BITPIX, any byte order) to a new native float32 array that owns
    its memory (never a view of a memory-mapped file), converted in one pass."""
    out = np.asarray(a, dtype=np.float32, order="C")  # C order also for a transposed (H, W, C) view
    if np.shares_memory(out, a) or not out.flags.writeable or not out.flags.owndata:
        out = out.copy()
    return out


def _hdu_band_name(header: fits.Header) -> str | None:
    for key in ("FILTER", "BAND", "FILTNAM1"):
        value = header.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    extname = str(header.get("EXTNAME", "")).strip()
    if extname.upper() not in _GENERIC_EXTNAMES:
        return extname
    return None


def _cube_band_names(header: fits.Header, n: int) -> list[str]:
    names = [header.get(f"BAND{i + 1}") for i in range(n)]
    if not all(isinstance(v, str) and v.strip() for v in names):
        listed = header.get("BANDS")
        if isinstance(listed, str) and len(listed.split(",")) == n:
            names = listed.split(",")
        else:
            names = [header.get(f"FILTER{i + 1}") for i in range(n)]
    names = [v.strip() if isinstance(v, str) and v.strip() else None for v in names]
    return _unique_or_default(names)


def _unique_or_default(names: Sequence[str | None]) -> list[str]:
    if all(names) and len(set(names)) == len(names):
        return list(names)
    return default_band_names(len(names))


def default_band_names(n: int) -> list[str]:
    """The names given to the ``n`` bands of a file that does not name them: ``band1 .. bandn``."""
    return [f"band{i + 1}" for i in range(n)]


def names_bands(bands: Sequence[str]) -> bool:
    """Whether ``bands`` are names a file (or a model card) gave, not :func:`default_band_names`
    stand-ins; only named bands can be compared by name."""
    return list(bands) != default_band_names(len(bands))


def _replace_non_finite(data: np.ndarray, bands: Sequence[str], path) -> list[int]:
    """Replace NaN/inf in place by the median of each band's finite pixels; return their counts.

    A band with no finite pixel, or a blank one (every pixel the same value), is a DataError
    naming ``path`` (the file, and the image of a multi-image cube).
    """
    counts = []
    for c in range(data.shape[0]):
        band = data[c]
        bad = ~np.isfinite(band)
        n_bad = int(bad.sum())
        if n_bad == band.size:
            raise DataError(f"{path}: band {bands[c]!r} has no finite pixel (all NaN or inf); "
                            "remove the file or the band")
        if n_bad:
            band[bad] = np.median(band[~bad])
        lo, hi = float(band.min()), float(band.max())
        if lo == hi:
            every = "every finite pixel" if n_bad else "every pixel"
            raise DataError(f"{path}: band {bands[c]!r} is blank ({every} is {lo:g}), so it holds no "
                            "image; remove the file or the band")
        counts.append(n_bad)
    return counts


# --------------------------------------------------------------------------- header helpers


def pixel_scale_arcsec(header: fits.Header) -> float | None:
    """Pixel scale in arcsec/pixel from ``PIXSCALE``, a ``CD`` matrix or ``CDELT`` (degrees).

    Returns None when the header does not say. For a ``CD`` matrix the scale is the square
    root of the absolute determinant (the geometric mean of the two axes).
    """
    value = header.get("PIXSCALE")
    if isinstance(value, (int, float)) and value > 0:
        return float(value)
    cd = [header.get(k) for k in ("CD1_1", "CD1_2", "CD2_1", "CD2_2")]
    if all(isinstance(v, (int, float)) for v in cd):
        det = abs(cd[0] * cd[3] - cd[1] * cd[2])
        if det > 0:
            return math.sqrt(det) * 3600.0
    cdelt = [header.get(k) for k in ("CDELT1", "CDELT2")]
    if all(isinstance(v, (int, float)) and v != 0 for v in cdelt):
        return math.sqrt(abs(cdelt[0] * cdelt[1])) * 3600.0
    return None


def zero_point(header: fits.Header) -> float | None:
    """Photometric zero point (magnitude of one unit of flux) from ``MAGZP``, ``ZEROPT``, ``MAGZERO``
    or ``ZP``; None when the header does not say."""
    for key in ("MAGZP", "ZEROPT", "MAGZERO", "ZP"):
        value = header.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            return float(value)
    return None


# --------------------------------------------------------------------------- per-band files


def band_from_token(token: str) -> str | None:
    """The band a file-name token names (``"g"``, ``"Ks"``, ``"F814W"``), or None.

    Single letters keep their case (SDSS ``r`` and Johnson ``R`` are different filters);
    HST/JWST-style filter names are upper-cased.
    """
    if token in _BAND_WAVELENGTH_NM:
        return token
    if token.upper() in ("NUV", "FUV", "W1", "W2", "W3", "W4"):
        return token.upper()
    if token.lower() == "ks":
        return "Ks"
    if _FILTER_RE.fullmatch(token):
        return token.upper()
    return None


def band_order_key(band: str) -> tuple[float, str]:
    """Sort key that lists bands blue to red (approximate effective wavelength)."""
    if band in _BAND_WAVELENGTH_NM:
        return (float(_BAND_WAVELENGTH_NM[band]), band)
    m = re.fullmatch(r"F(\d{3,4})\w*", band)
    if m:
        n = int(m.group(1))
        # HST UVIS/ACS names give nm (F435W); names below F200 (HST IR F160W, JWST F070W)
        # and four-digit ones (JWST MIRI F1000W) give units of 10 nm.
        return (float(n * 10 if n < 200 or n >= 1000 else n), band)
    return (math.inf, band)


def group_band_files(paths: Iterable[str | os.PathLike]) -> dict[str, dict[str, Path]]:
    """Group one-file-per-band FITS files into multi-band objects by file name.

    ``obj001_g.fits``, ``obj001-r.fits`` and ``obj001.i.fits`` all belong to ``obj001``. The
    band token after the last ``_``, ``-`` or ``.`` must name a known band (u g r i z y, U B V
    R I, J H K Ks, NUV FUV, W1-W4, or an HST/JWST filter such as F814W).

    Parameters
    ----------
    paths : iterable of path
        FITS files.

    Returns
    -------
    dict
        ``{key: {band: path}}``. ``key`` is the file's folder joined with the stem left after
        removing the band token (so files in different folders never merge); its ``Path(key).name``
        is the bare stem. Bands are ordered blue to red. A file whose name carries no band
        token is its own group under the band ``""`` (its bands come from inside the file).

    Raises
    ------
    DataError
        Two files name the same band of the same object (``obj_g.fits`` and ``obj-g.fits``).
    """
    groups: dict[str, dict[str, Path]] = {}
    for p in map(Path, paths):
        stem = fits_stem(p)
        m = _BAND_FILE_RE.match(stem)
        band = band_from_token(m.group("band")) if m else None
        key = str(p.parent / (m.group("stem") if band else stem))
        band = band or ""
        group = groups.setdefault(key, {})
        if band in group:
            raise DataError(f"{p}: band {band or '(whole file)'!r} of {key!r} is also given by "
                            f"{group[band]}; keep one file per band")
        group[band] = p
    def blue_to_red(group: dict[str, Path]) -> dict[str, Path]:
        return dict(sorted(group.items(), key=lambda kv: band_order_key(kv[0])))

    return {key: blue_to_red(group) for key, group in groups.items()}


# --------------------------------------------------------------------------- writing


def write_fits_cube(
    path: str | os.PathLike,
    data: np.ndarray,
    *,
    bands: Sequence[str],
    header_cards: Mapping[str, Any] | None = None,
    table=None,
    bunit: str | None = None,
    pixel_scale_arcsec: float | None = None,
) -> Path:
    """Write images to a FITS file atomically, with honest header cards.

    Parameters
    ----------
    path : path
        Destination; a ``.gz`` suffix gzip-compresses. Written to a temporary file beside it,
        fsynced and renamed, so readers never see a partial file.
    data : ndarray, (N, C, H, W) or (C, H, W)
        Pixel values. float16/float64 are written as float32 (FITS has no float16); integer
        types are kept. FITS axis order is reversed: ``NAXIS1 = W``, ``NAXIS3 = C``.
    bands : sequence of str
        One name per channel ``C``; written as ``BAND1..BANDn``.
    header_cards : mapping, optional
        Provenance cards ``{keyword: value}`` or ``{keyword: (value, comment)}``. Keywords longer
        than 8 characters or with characters outside ``A-Z0-9_-`` become ``HIERARCH`` cards
        (upper-cased); long strings use ``CONTINUE``; dicts and lists are stored as JSON; non-ASCII
        characters are escaped.
    table : astropy.table.Table, optional
        Per-image catalogue, written as a binary table HDU named ``CATALOG``.
    bunit : str, optional
        Physical unit of the pixels (a string astropy's units parse, e.g. ``"nanomaggy"``;
        ``""`` for dimensionless values). When neither this nor ``header_cards["BUNIT"]`` is
        given, no ``BUNIT`` card is written (a comment says the unit is not known) rather than
        a guessed or made-up unit.
    pixel_scale_arcsec : float, optional
        Pixel scale, written as ``PIXSCALE`` (arcsec/pixel).

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    data = np.asarray(data)
    if data.ndim not in (3, 4):
        raise ValueError(f"data must be (N, C, H, W) or (C, H, W), got shape {data.shape}")
    bands = [str(b) for b in bands]
    if len(bands) != data.shape[-3]:
        raise ValueError(f"{len(bands)} band names for {data.shape[-3]} channels")
    primary = fits.PrimaryHDU(_fits_pixels(data))
    _write_cards(primary.header, bands=bands, header_cards=header_cards or {}, bunit=bunit,
                 pixel_scale_arcsec=pixel_scale_arcsec)
    hdus = [primary]
    if table is not None:
        hdus.append(table_hdu(table, "CATALOG"))
    hdul = fits.HDUList(hdus)
    with atomic_open(path, "wb") as f:
        if path.name.lower().endswith(".gz"):
            with gzip.GzipFile(fileobj=f, mode="wb") as gz:
                hdul.writeto(gz)
        else:
            hdul.writeto(f)
    return path


def table_hdu(table, name: str) -> fits.BinTableHDU:
    """An astropy ``Table`` as a binary table HDU named ``name``, its column descriptions kept
    as the comments of the ``TTYPEn`` cards (astropy's own conversion drops them; units go to
    ``TUNITn`` as usual). Descriptions are ASCII-escaped and cut to fit the card."""
    import warnings

    with warnings.catch_warnings():  # a unit FITS does not define (nanomaggy) is written below instead
        warnings.filterwarnings("ignore", message=".*could not be saved in native FITS format.*")
        hdu = fits.table_to_hdu(table)
    hdu.name = name
    for i, col in enumerate(table.columns.values(), start=1):
        if col.description:
            hdu.header.comments[f"TTYPE{i}"] = _ascii(str(col.description))[:47]
        if col.unit is not None and f"TUNIT{i}" not in hdu.header:  # as the image's BUNIT names it
            text = col.meta.get("unit_text") or col.unit.to_string()
            hdu.header.insert(f"TFORM{i}", (f"TUNIT{i}", _ascii(str(text)), "unit (not a FITS standard unit)"),
                              after=True)
    return hdu


def provenance_header(*, bands: Sequence[str], header_cards: Mapping[str, Any] | None = None,
                      bunit: str | None = None, pixel_scale_arcsec: float | None = None) -> fits.Header:
    """The header cards :func:`write_fits_cube` writes (unit, ``BAND1..n``, ``PIXSCALE``,
    ``ORIGIN``, ``CREATOR``, ``DATE`` and ``header_cards`` with the same keyword and value
    rules), for writers that build their own HDUs (a composed sky and its truth table)."""
    header = fits.Header()
    _write_cards(header, bands=[str(b) for b in bands], header_cards=header_cards or {}, bunit=bunit,
                 pixel_scale_arcsec=pixel_scale_arcsec)
    return header


def _fits_pixels(data: np.ndarray) -> np.ndarray:
    """Pixels in a dtype FITS can store: floats as float32, integers unchanged."""
    if np.issubdtype(data.dtype, np.floating):
        return np.ascontiguousarray(data, dtype=np.float32)
    if data.dtype == np.bool_:
        return data.astype(np.uint8)
    return np.ascontiguousarray(data)


def _write_cards(header, *, bands, header_cards, bunit, pixel_scale_arcsec) -> None:
    unit = bunit if bunit is not None else header_cards.get("BUNIT")
    if isinstance(unit, tuple):
        unit = unit[0]
    if unit is not None:  # "" is a unit: dimensionless (astropy reads it so)
        header["BUNIT"] = (unit, "pixel unit")
    else:  # no BUNIT card: FITS's own way to say the unit is not known (no made-up unit name)
        header.add_comment("pixel unit not known (no BUNIT)")
    for i, band in enumerate(bands):
        header[f"BAND{i + 1}"] = (_ascii(band), f"band of plane {i + 1} (NAXIS3)")
    if pixel_scale_arcsec is not None:
        header["PIXSCALE"] = (float(pixel_scale_arcsec), "[arcsec/pixel] pixel scale")
    header["ORIGIN"] = (ORIGIN, "software that wrote this file")
    header["CREATOR"] = (f"{ORIGIN} {__version__}", "software name and version")
    header["DATE"] = (datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"), "UTC file creation")
    header["ROWORDER"] = ("top-down", CARD_COMMENTS["ROWORDER"])
    for key, value in header_cards.items():
        if key.upper() == "BUNIT":
            continue
        comment = None
        if isinstance(value, tuple):
            value, comment = value
        card_value = _card_value(value)
        if not comment and _card_keyword(key) in CARD_COMMENTS and _fits_in_card(key, card_value,
                                                                                   CARD_COMMENTS[_card_keyword(key)]):
            comment = CARD_COMMENTS[_card_keyword(key)]  # the standard meaning, where the value leaves room
        header[_card_keyword(key)] = (card_value, comment) if comment else card_value


def _fits_in_card(key: str, value, comment: str) -> bool:
    """Whether ``key = value / comment`` fits one 80-character card (no truncated comment)."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fits.Card(_card_keyword(key), value, comment).image
    return not caught


# what the project's provenance keywords mean, for cards given without a comment
CARD_COMMENTS = {
    "CKPT": "checkpoint name (its model card: NAME.json)",
    "CKPTID": "sha256 of its tensors, first 12 hex digits",
    "ARCH": "model architecture",
    "SEED": "latent seed; -1: latents as LATENTS says",
    "ZP": "[mag] zero point: m = ZP - 2.5 log10(flux)",
    "PIXSCALE": "[arcsec/pixel] pixel scale",
    "ROWORDER": "array row 0 = top row of the PNG",
}


def _card_keyword(key: str) -> str:
    key = key.strip()
    if key.upper().startswith("HIERARCH "):
        key = key[9:].strip()
    key = _ascii(key).upper()
    if len(key) <= 8 and re.fullmatch(r"[A-Z0-9_-]+", key):
        return key
    return f"HIERARCH {key}"


def _card_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else str(float(value))
    if isinstance(value, (dict, list, tuple)):
        return _ascii(json_text(value, default=str, separators=(",", ":")))
    return _ascii(str(value))


def _ascii(s: str) -> str:
    """Printable ASCII only (FITS headers allow nothing else); others are escaped."""
    s = s.encode("ascii", "backslashreplace").decode("ascii")
    return "".join(ch if 32 <= ord(ch) < 127 else " " for ch in s)
