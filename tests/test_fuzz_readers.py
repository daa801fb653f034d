"""Damaged files given to the FITS and folder readers: a clear error or a skipped-file record.

Each example takes a small valid file written here (a FITS cube, a two-HDU FITS file, a
gzip-compressed FITS image, a PNG, a JPEG) and damages it the way files get damaged: bytes
overwritten, a run of bytes replaced, the file truncated, garbage appended. The readers must
then either read it (damage in pixel data is still a valid file) or raise
:class:`galaxy_core.errors.DataError` naming the file; a folder must list every damaged file it
could not use in ``manifest["skipped"]`` with a reason. Any other exception fails the test.
"""

from __future__ import annotations

import gzip
import io

import numpy as np
import pytest
from astropy.io import fits
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from galaxy_core.data.folder import prepare_folder
from galaxy_core.errors import DataError
from galaxy_core.io.fits import read_fits_image

FUZZ = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip


def _fits_bytes(kind: str) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    if kind == "cube":
        hdu = fits.PrimaryHDU(rng.normal(1, 0.1, (3, 12, 12)).astype(np.float32))
        for i, b in enumerate("gri"):
            hdu.header[f"BAND{i + 1}"] = b
        hdu.header["PIXSCALE"] = 0.396
        hdu.header["MAGZP"] = 22.5
        fits.HDUList([hdu]).writeto(buf)
    elif kind == "two_hdus":
        ext = [fits.ImageHDU(rng.normal(0, 1, (10, 10)).astype(">i2"), name=b) for b in "gr"]
        fits.HDUList([fits.PrimaryHDU(), *ext]).writeto(buf)
    else:  # gzip
        raw = io.BytesIO()
        fits.PrimaryHDU(rng.normal(0, 1, (16, 16)).astype(np.float64)).writeto(raw)
        return gzip.compress(raw.getvalue(), mtime=0)
    return buf.getvalue()


def _image_bytes(fmt: str) -> bytes:
    rng = np.random.default_rng(1)
    rgb = (rng.uniform(0, 1, (24, 24, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, format=fmt)
    return buf.getvalue()


@st.composite
def damage(draw, original: bytes) -> bytes:
    """One kind of damage applied to ``original``."""
    data = bytearray(original)
    kind = draw(st.sampled_from(["overwrite", "splice", "truncate", "append"]))
    if kind == "overwrite":  # a few bytes anywhere, header cards included
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    elif kind == "splice":  # a run of bytes replaced by random ones
        start = draw(st.integers(0, len(data) - 1))
        data[start : start + 80] = draw(st.binary(min_size=1, max_size=80))
    elif kind == "truncate":
        del data[draw(st.integers(0, len(data) - 1)) :]
    else:
        data += draw(st.binary(min_size=1, max_size=200))
    return bytes(data)


@st.composite
def damaged_fits(draw) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(["cube", "two_hdus", "gzip"]))
    suffix = ".fits.gz" if kind == "gzip" else ".fits"
    return suffix, draw(damage(_fits_bytes(kind)))


@FUZZ
@given(case=damaged_fits())
def test_damaged_fits_is_read_or_refused_clearly(tmp_path_factory, case):
    suffix, content = case
    path = tmp_path_factory.mktemp("fuzz") / f"galaxy{suffix}"
    path.write_bytes(content)
    try:
        img = read_fits_image(path)
    except DataError as e:
        assert str(path) in str(e)  # the message names the file
    else:
        assert img.data.ndim == 3 and img.data.dtype == np.float32
        assert np.isfinite(img.data).all()  # non-finite pixels were replaced


def _check_folder_outcome(folder, names: list[str], **options) -> None:
    """prepare_folder either fails with a DataError naming the folder, or accounts for
    every file: in the catalogue, or in ``skipped`` with a reason."""
    try:
        ds = prepare_folder(folder, resolution=16, crop=1.0, normalisation="asinh",
                            rebuild=True, progress=False, **options)  # fmt: skip
    except DataError as e:
        assert str(folder) in str(e)
        return
    used = set(ds.catalog["file"])
    skipped = {s["file"]: s["reason"] for s in ds.manifest["skipped"]}
    assert all(reason for reason in skipped.values())
    assert used | set(skipped) == set(names) and not used & set(skipped)
    assert np.isfinite(np.asarray(ds.images, np.float32)).all()


@FUZZ
@given(case=damaged_fits())
def test_fits_folder_with_a_damaged_file(tmp_path_factory, monkeypatch, case):
    suffix, content = case
    root = tmp_path_factory.mktemp("fuzzfolder")
    monkeypatch.setenv("GALAXYGAN_CACHE", str(root / "cache"))
    folder = root / "data"
    folder.mkdir()
    (folder / "good.fits").write_bytes(_fits_bytes("cube"))
    (folder / f"damaged{suffix}").write_bytes(content)
    _check_folder_outcome(folder, ["good.fits", f"damaged{suffix}"])


@FUZZ
@given(fmt=st.sampled_from(["PNG", "JPEG"]), data=st.data())
def test_image_folder_with_a_damaged_file(tmp_path_factory, monkeypatch, fmt, data):
    suffix = ".png" if fmt == "PNG" else ".jpg"
    content = data.draw(damage(_image_bytes(fmt)))
    root = tmp_path_factory.mktemp("fuzzimages")
    monkeypatch.setenv("GALAXYGAN_CACHE", str(root / "cache"))
    folder = root / "data"
    folder.mkdir()
    (folder / f"good{suffix}").write_bytes(_image_bytes(fmt))
    (folder / f"damaged{suffix}").write_bytes(content)
    _check_folder_outcome(folder, [f"good{suffix}", f"damaged{suffix}"])


def test_truncated_fits_is_skipped_with_its_name(tmp_path, monkeypatch):
    # the one damage every reader meets most: a download cut short
    monkeypatch.setenv("GALAXYGAN_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "a.fits").write_bytes(_fits_bytes("cube"))
    (folder / "b.fits").write_bytes(_fits_bytes("cube")[:3000])
    ds = prepare_folder(folder, resolution=16, crop=1.0, normalisation="asinh", rebuild=True,
                        progress=False)  # fmt: skip
    assert list(ds.catalog["file"]) == ["a.fits"]
    [skip] = ds.manifest["skipped"]
    assert skip["file"] == "b.fits" and "cannot read as FITS" in skip["reason"]
    with pytest.raises(DataError, match="b.fits.*cannot read as FITS"):
        read_fits_image(folder / "b.fits")
