"""User data: a folder of JPG/PNG/TIFF images or FITS files turned into a prepared dataset.

8-bit images (``.jpg .jpeg .png .tif .tiff``) are decoded with PIL, converted to R, G, B (or
one grey channel when every image is grey), centre-cropped, resized with Lanczos and stored as
uint8. FITS files (``.fits .fit .fts``, gzip or tile-compressed) are read as flux, grouped into
multi-band images when there is one file per band (``obj_g.fits``, ``obj_r.fits``), cropped,
resized keeping their total flux (the project's one flux convention,
:mod:`galaxy_core.io.units`), stretched to [-1, 1] and stored as float16 together with the
stretch parameters. A FITS file holding an ``(N, C, H, W)`` cube (``samples.fits`` as
``galaxygan sample`` writes it) gives N images, named ``file#0`` .. ``file#N-1``.

Files that cannot be decoded, and blank ones (every pixel the same value), are skipped and
listed in ``manifest["skipped"]``. The result is cached under
``cache_dir()/prepared/folder-<key>``, where the key hashes every source file and the
preprocessing options, so a second call with the same folder and options opens the cache and a
changed file gives a fresh build.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
from collections import Counter
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from galaxy_core.data.prepared import (
    PreparedDataset,
    cache_key,
    file_hash,
    new_temporary_dir,
    open_prepared,
    write_prepared,
)
from galaxy_core.data.transforms import centre_crop, resize
from galaxy_core.errors import DataError
from galaxy_core.io.fits import (
    fits_stem,
    group_band_files,
    is_fits_path,
    pixel_scale_arcsec,
    read_fits_image,
    read_fits_images,
    zero_point,
)
from galaxy_core.io.stretch import stretch_into
from galaxy_core.io.units import FLUX_CONVENTION
from galaxy_core.paths import cache_dir
from galaxy_core.progress import Progress, track

log = logging.getLogger(__name__)

PREPARE_VERSION = 4  # bump when preprocessing changes, so old caches are not reused
# 2: resized FITS keep total flux (galaxy_core.io.units), symmetric centre crop; 3: blank images skipped;
# 4: every image of an (N, C, H, W) FITS cube read (a file of samples as `galaxygan sample` writes it).
# Not bumped when the catalogue of 8-bit images gained source_pixels_per_pixel (the images are the same,
# and a new key would refuse to resume every run on a folder); copies cached before lack that column.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
_GREY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
_SIXTEEN_BIT_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}
_RESIZE_IMAGE = "centre square crop, Lanczos (PIL) on 8-bit values"
_RESIZE_FLUX = ("centre square crop, Gaussian antialias + bilinear (skimage.transform.resize), "
                "times the pixel-area ratio: total flux kept, values are flux per output pixel")
_SPILL_BYTES = 1 << 30  # arrays larger than this are built in a temporary file, not in memory
_CHUNK = 256  # images per stretch step


def prepare_folder(
    path: str | os.PathLike,
    *,
    resolution: int,
    crop: float,
    normalisation: str,
    rebuild: bool,
    progress: Progress,
) -> PreparedDataset:
    """Prepare (or open the cached copy of) a folder of images or FITS files.

    Parameters
    ----------
    path : path
        A folder, searched recursively (hidden files and folders are ignored), or one file.
        The folder must hold either 8-bit images or FITS files, not both.
    resolution : int
        Output side in pixels.
    crop : float
        Centre-crop fraction of the central square, in (0, 1], applied before resizing.
    normalisation : {"asinh", "minmax"}
        FITS only: the invertible asinh stretch fitted over the whole dataset, or per-image
        min-max (not flux-preserving). Ignored for 8-bit images (and left out of their key).
    rebuild : bool
        Prepare again even when a cached copy exists.
    progress : bool or callable
        Show tqdm progress bars; or a callable ``progress(done, total)`` called as work
        completes (:mod:`galaxy_core.progress`).

    Returns
    -------
    PreparedDataset
        8-bit images: uint8 ``(N, C, R, R)``, channels ``["R", "G", "B"]`` or ``["L"]`` when
        every image is grey, kind ``"image"``. FITS: float16 ``(N, C, R, R)`` in [-1, 1], the
        bands as channels, kind ``"physical"``, the stretch in the manifest. The catalogue holds
        each image's source file and ``source_pixels_per_pixel``, ``(side / resolution)**2`` of
        the cropped square it was resized from (below 1: the image was enlarged).

    Raises
    ------
    DataError
        No usable file, images mixed with FITS, FITS files with different bands, or every
        file failed to decode or was blank (the reasons are listed).
    """
    path = Path(path).expanduser().resolve()
    broken: list[Path] = []
    image_files, fits_files = _scan(path, broken)
    base = path if path.is_dir() else path.parent
    kind = "physical" if fits_files else "image"
    files = fits_files or image_files
    sources = {_rel(f, base): file_hash(f) for f in track(files, progress, desc="hashing files", unit="file")}
    key = cache_key({
        "sources": sources,
        "resolution": int(resolution),
        "crop": float(crop),
        "normalisation": normalisation if kind == "physical" else None,
        "version": PREPARE_VERSION,
    })
    root = cache_dir() / "prepared" / f"folder-{key}"
    if root.exists() and not rebuild:
        try:
            ds = open_prepared(root)
        except DataError as e:
            log.warning("%s; preparing it again", e)
        else:  # the same files under another folder: the copy is shared, the name and source are this folder's
            return dataclasses.replace(ds, manifest={**ds.manifest, "name": _dataset_name(path, kind),
                                                     "source": str(path)})
    manifest = {
        "name": _dataset_name(path, kind),
        "key": key,
        "source": str(path),
        "kind": kind,
        "version": PREPARE_VERSION,
    }
    root.parent.mkdir(parents=True, exist_ok=True)
    with _spill_dir(root.parent) as spill:
        if kind == "image":
            images, catalog, extra = _prepare_images(
                image_files, base, resolution=resolution, crop=crop, progress=progress, spill=spill)
        else:
            images, catalog, extra = _prepare_fits(
                fits_files, base, resolution=resolution, crop=crop, normalisation=normalisation,
                progress=progress, spill=spill)
        extra["skipped"] = [{"file": _rel(p, base), "reason": f"a link whose target is missing ({os.readlink(p)})"}
                            for p in broken] + extra["skipped"]  # listed, as unreadable files are
        _check_some_usable(path, len(images), extra["skipped"])
        manifest.update(extra)
        dataset = write_prepared(root, images, manifest, catalog=catalog, replace=rebuild)
        del images  # release a memory-mapped spill file before its folder is removed
    return dataset


# --------------------------------------------------------------------------- scanning


def _scan(path: Path, broken: list[Path] | None = None) -> tuple[list[Path], list[Path]]:
    """Image and FITS files under ``path`` (sorted by relative path), checking the mix; links
    whose target is missing are appended to ``broken`` (in the same walk of the folder)."""
    if path.is_file():
        candidates = [path]
    else:
        candidates, dead = [], []
        for p in path.rglob("*"):
            if _hidden(p.relative_to(path)):
                continue
            if p.is_file():
                candidates.append(p)
            elif p.is_symlink() and not p.exists():
                dead.append(p)
        candidates.sort(key=lambda p: p.relative_to(path).as_posix())
        if broken is not None:
            broken.extend(sorted(dead, key=lambda p: p.relative_to(path).as_posix()))
    image_files = [p for p in candidates if p.name.lower().endswith(IMAGE_SUFFIXES)]
    fits_files = [p for p in candidates if is_fits_path(p)]
    if image_files and fits_files:
        raise DataError(f"{path}: mixes 8-bit images ({image_files[0].name}, ...) and FITS files "
                        f"({fits_files[0].name}, ...); put them in separate folders")
    if not image_files and not fits_files:
        what = "is not an image or FITS file" if path.is_file() else "holds no image or FITS file"
        raise DataError(f"{path}: {what} (looked for {', '.join(IMAGE_SUFFIXES)}, .fits, .fit, "
                        ".fts, .fits.gz, .fz)")
    return image_files, fits_files


def _dataset_name(path: Path, kind: str) -> str:
    if path.is_dir():
        return path.name
    return fits_stem(path) if kind == "physical" else path.stem


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def _rel(f: Path, base: Path) -> str:
    return f.relative_to(base).as_posix()


def _check_some_usable(path: Path, count: int, skipped: list[dict]) -> None:
    if count:
        if skipped:
            log.warning("%s: skipped %d unreadable or blank file(s); see manifest['skipped']", path,
                        len(skipped))
        return
    reasons = "; ".join(f"{s['file']}: {s['reason']}" for s in skipped[:5])
    more = f" (and {len(skipped) - 5} more)" if len(skipped) > 5 else ""
    raise DataError(f"{path}: no usable image: {reasons}{more}")


def _skip(skipped: list[dict], file: str, reason: str) -> None:
    log.info("skipping %s: %s", file, reason)
    skipped.append({"file": file, "reason": reason})


@contextmanager
def _spill_dir(parent: Path):
    """Temporary folder beside the cache for arrays too big to build in memory."""
    tmp = new_temporary_dir(parent, "spill")  # named so a killed run's folder is removed later
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _alloc(shape: tuple[int, ...], dtype, *, spill: Path, name: str) -> np.ndarray:
    """Preallocate an output array; memory-mapped in ``spill`` when larger than 1 GiB."""
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    if nbytes <= _SPILL_BYTES:
        return np.empty(shape, dtype)
    return np.lib.format.open_memmap(spill / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)


# --------------------------------------------------------------------------- 8-bit images


def _prepare_images(files, base, *, resolution, crop, progress, spill):
    """Decode, crop and resize 8-bit images into uint8 (N, C, R, R)."""
    skipped: list[dict] = []
    modes = {}
    for f in files:  # headers only: decides grey vs colour before anything is decoded
        try:
            with Image.open(f) as im:
                modes[f] = im.mode
        except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, ... on bad files
            _skip(skipped, _rel(f, base), f"cannot open as an image ({type(e).__name__}: {e})")
    readable = [f for f in files if f in modes]
    grey = bool(readable) and all(m in _GREY_MODES for m in modes.values())
    channels = ["L"] if grey else ["R", "G", "B"]
    out = _alloc((len(readable), len(channels), resolution, resolution), np.uint8,
                 spill=spill, name="images")
    names: list[str] = []
    sides: list[int] = []  # side of each cropped square before the resize
    for f in track(readable, progress, desc="decoding images", unit="img"):
        try:
            with Image.open(f) as im:
                img = image_to_uint8(im, channels=len(channels))  # (C, H, W) uint8
        except Exception as e:
            _skip(skipped, _rel(f, base), f"cannot decode ({type(e).__name__}: {e})")
            continue
        if (img == img[:, :1, :1]).all():  # one colour everywhere (each channel constant)
            value = ", ".join(str(int(v)) for v in img[:, 0, 0])
            after = " after conversion to 8 bits" if modes[f] in _SIXTEEN_BIT_MODES | {"F"} else ""
            _skip(skipped, _rel(f, base), f"blank{after}: every pixel is ({value}), so it holds no galaxy")
            continue
        cropped = centre_crop(img, crop)
        out[len(names)] = resize(cropped, resolution)
        names.append(_rel(f, base))
        sides.append(cropped.shape[-1])
    extra = {
        "channels": channels,
        "preprocess": {"crop": float(crop), "resolution": int(resolution), "normalisation": None,
                       "resize": _RESIZE_IMAGE},
        "stretch": None,
        "skipped": skipped,
        "num_nan_replaced": 0,
        "clip_fraction": 0.0,
    }
    area = np.asarray([(side / resolution) ** 2 for side in sides], np.float64)
    return out[: len(names)], _file_catalog(names, source_pixels_per_pixel=area), extra


def image_to_uint8(im: Image.Image, *, channels: int) -> np.ndarray:
    """A PIL image of any mode as a uint8 ``(channels, H, W)`` array.

    Parameters
    ----------
    im : PIL.Image.Image
        Modes 1, L, LA, P, RGB, RGBA, CMYK, YCbCr, LAB, HSV, I, I;16*.
    channels : {1, 3}
        1 for grey output (only for grey modes), 3 for R, G, B (grey is repeated).

    Returns
    -------
    ndarray, uint8, (channels, H, W)
        Transparent pixels are composited on black; 16-bit values ``v`` become
        ``round(v * 255 / 65535)`` (the full 16-bit range, not a per-image stretch).

    Raises
    ------
    ValueError
        32-bit float images (mode F), whose 8-bit range is unknown: save them as FITS instead.
    """
    grey = _grey_uint8(im) if im.mode in _GREY_MODES else None
    if channels == 1:
        if grey is None:
            raise ValueError(f"mode {im.mode} image is not grey")
        return grey[None]
    if grey is not None:
        return np.repeat(grey[None], 3, axis=0)
    return _rgb_uint8(im).transpose(2, 0, 1)


def _grey_uint8(im: Image.Image) -> np.ndarray:
    """(H, W) uint8 from a grey-mode image."""
    if im.mode == "F":
        raise ValueError("32-bit float image: no 8-bit range is known; save it as FITS to keep "
                         "its values")
    if im.mode in _SIXTEEN_BIT_MODES:
        return sixteen_bit_to_uint8(np.asarray(im))
    if im.mode in ("LA", "La"):
        la = np.asarray(im.convert("LA"))
        return _composite_on_black(la[..., :1], la[..., 1])[..., 0]
    return np.asarray(im.convert("L"))


def _rgb_uint8(im: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 from a colour-mode image, transparency composited on black."""
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "RGBa", "PA"):
        rgba = np.asarray(im.convert("RGBA"))
        return _composite_on_black(rgba[..., :3], rgba[..., 3])
    return np.asarray(im.convert("RGB"))


def sixteen_bit_to_uint8(a: np.ndarray) -> np.ndarray:
    """16-bit values (0..65535, any integer dtype) to uint8, rounded; out of range is clipped."""
    a = np.clip(np.asarray(a, np.int64), 0, 65535)
    return ((a * 255 + 32767) // 65535).astype(np.uint8)


def _composite_on_black(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """uint8 colour (H, W, k) times alpha (H, W) / 255, rounded: 'over' a black background."""
    c = colour.astype(np.uint32) * alpha[..., None].astype(np.uint32)
    return ((c + 127) // 255).astype(np.uint8)


def _file_catalog(names: Sequence[str], **columns):
    """Per-image table: source file (ASCII-escaped, FITS holds nothing else) and extra columns."""
    from astropy.table import Table

    files = [n.encode("ascii", "backslashreplace").decode("ascii") for n in names]
    return Table({"file": files, **columns})


# --------------------------------------------------------------------------- FITS


def _prepare_fits(files, base, *, resolution, crop, normalisation, progress, spill):
    """Read, crop, resize and stretch FITS images into float16 (N, C, R, R) in [-1, 1]."""
    groups = group_band_files(files)
    skipped: list[dict] = []
    band_sets: dict[str, tuple[str, ...]] = {}  # item -> its bands, for the consistency check
    flux = None
    names, nan_counts, sides, scales, zps, units = [], [], [], [], [], []
    for key, group in track(groups.items(), progress, desc="reading FITS files", unit="file"):
        try:
            items = _load_fits_items(key, group, base, skipped)
        except _SkipItem as e:
            _skip(skipped, e.file, e.reason)
            continue
        for label, (data, bands, n_nan, header) in items:
            band_sets[label] = tuple(bands)
            if flux is None:
                reference = tuple(bands)
                flux = _alloc((len(groups) + len(items) - 1, len(bands), resolution, resolution), np.float32,
                              spill=spill, name="flux")
            if tuple(bands) != reference:
                continue  # reported below, after every file has been seen
            if len(names) == len(flux):  # a file of several images: room for them
                flux = _grow(flux, len(names) + len(items), spill=spill, name="flux")
            _add_fits_image(flux, names, nan_counts, sides, scales, zps, units, label, data, n_nan, header,
                            crop=crop, resolution=resolution)
    _check_same_bands(base, band_sets)
    if flux is None:
        return np.empty((0, 1, resolution, resolution), np.float16), None, {"skipped": skipped}
    flux = flux[: len(names)]
    out = _alloc(flux.shape, np.float16, spill=spill, name="images")
    stretched = stretch_into(flux, out, normalisation=normalisation, chunk=_CHUNK, progress=progress)
    area = [(s / resolution) ** 2 for s in sides]
    extra = {
        "channels": list(reference),
        "preprocess": {
            "crop": float(crop),
            "resolution": int(resolution),
            "normalisation": normalisation,
            "resize": _RESIZE_FLUX,
            "stretch_fit_images": stretched["stretch_fit_images"],
            "flux_convention": FLUX_CONVENTION,
            "source_pixels_per_pixel": _common(area),
        },
        "stretch": stretched["stretch"],
        "skipped": skipped,
        "num_nan_replaced": int(sum(nan_counts)),
        "clip_fraction": float(stretched["clip_fraction"]),
        "flux_unit": _common(units),
        "pixel_scale_arcsec": _common(
            [None if s is None else s * side / resolution for s, side in zip(scales, sides)]
        ),
        "zero_point": _common(zps),
    }
    catalog = _file_catalog(names, num_nan_replaced=np.asarray(nan_counts, np.int64),
                            source_pixels_per_pixel=np.asarray(area, np.float64))
    return out, catalog, extra


def _add_fits_image(flux, names, nan_counts, sides, scales, zps, units, label, data, n_nan, header, *,
                    crop, resolution) -> None:
    cropped = centre_crop(data, crop)
    flux[len(names)] = resize(cropped, resolution)
    names.append(label)
    nan_counts.append(n_nan)
    sides.append(cropped.shape[-1])
    scales.append(pixel_scale_arcsec(header))
    zps.append(zero_point(header))
    units.append(str(header.get("BUNIT", "")).strip() or None)


def _grow(arr: np.ndarray, need: int, *, spill: Path, name: str) -> np.ndarray:
    """A longer copy of a preallocated array (first axis at least ``need``, doubling)."""
    size = max(need, 2 * len(arr))
    out = _alloc((size,) + arr.shape[1:], arr.dtype, spill=spill, name=f"{name}-{size}")
    out[: len(arr)] = arr
    return out


class _SkipItem(Exception):
    def __init__(self, file: str, reason: str):
        super().__init__(f"{file}: {reason}")
        self.file, self.reason = file, reason


def _item_label(key: str, group: dict[str, Path], base: Path) -> str:
    """How an item is named in the catalogue: its file, or ``stem[g,r,i]`` for band files."""
    if list(group) == [""]:
        return _rel(group[""], base)
    return f"{_rel(Path(key), base)}[{','.join(group)}]"


def _load_fits_items(key: str, group: dict[str, Path], base: Path, skipped: list[dict]):
    """The images of one item: ``[(label, (data, bands, nan count, header))]``. One file of a
    ``(N, C, H, W)`` cube (``samples.fits`` as ``galaxygan sample`` writes it) gives N images
    labelled ``file#i``, and one of them that cannot be used is skipped and listed on its own."""
    if list(group) != [""]:
        return [(_item_label(key, group, base), _load_fits_item(group, base))]
    p, bad = group[""], []
    try:
        images = read_fits_images(p, bad=bad)
    except DataError as e:
        raise _SkipItem(_rel(p, base), str(e).removeprefix(f"{p}: ")) from e
    for i, message in bad:
        _skip(skipped, f"{_rel(p, base)}#{i}", message.removeprefix(f"{p} [image {i}]: "))
    return [(_rel(p, base) if img.index is None else f"{_rel(p, base)}#{img.index}",
             (img.data, img.bands, img.num_nan_replaced, img.header)) for img in images]


def _load_fits_item(group: dict[str, Path], base: Path):
    """One image from one FITS file or from one file per band: (data, bands, nan count, header)."""
    images = []
    for band, p in group.items():
        try:
            img = read_fits_image(p)
        except DataError as e:
            reason = str(e).removeprefix(f"{p}: ")
            if band and "images (a cube of shape" in reason:  # a band file must hold one image
                reason = (f"is named as band {band!r} of one galaxy but {reason.split(' (', 1)[0]}; "
                          "a band file holds one 2-D image (a file named without a band token gives every "
                          "image of its cube)")
            raise _SkipItem(_rel(p, base), reason) from e
        if band and img.data.shape[0] != 1:
            raise _SkipItem(_rel(p, base), f"is named as band {band!r} but holds "
                                           f"{img.data.shape[0]} bands; expected one 2-D image")
        images.append(img)
    if len(images) == 1:
        img = images[0]
        bands = list(group) if list(group) != [""] else img.bands
        return img.data, bands, img.num_nan_replaced, img.header
    if "" in group:
        named = [b for b in group if b]
        raise _SkipItem(_rel(group[""], base), f"its name has no band but files of the same "
                                               f"object name bands {named}; rename it")
    shapes = {img.data.shape for img in images}
    if len(shapes) > 1:
        raise _SkipItem(_rel(images[0].path, base), f"band files of one object have different "
                                                    f"shapes {sorted(shapes)}")
    data = np.concatenate([img.data for img in images])  # (C, H, W), bands blue to red
    return data, list(group), sum(img.num_nan_replaced for img in images), images[0].header


def _check_same_bands(base: Path, band_sets: dict[str, tuple[str, ...]]) -> None:
    counts = Counter(band_sets.values())
    if len(counts) <= 1:
        return
    common = counts.most_common(1)[0][0]
    odd = [f"{label} {list(b)}" for label, b in band_sets.items() if b != common]
    more = f" (and {len(odd) - 10} more)" if len(odd) > 10 else ""
    raise DataError(f"{base}: FITS images must all have the same bands; most have "
                    f"{list(common)} but these differ: {', '.join(odd[:10])}{more}. "
                    "Move them to another folder or fix their band names")


def _common(values: Sequence):
    """The shared value of a list (floats within 1e-6 relative), else None."""
    if not values or any(v is None for v in values):
        return None
    first = values[0]
    if isinstance(first, float):
        ok = all(math.isclose(v, first, rel_tol=1e-6) for v in values)
    else:
        ok = all(v == first for v in values)
    return first if ok else None
