"""FITS reading (every layout galaxy data comes in), band-file grouping and cube writing."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from galaxy_core.errors import DataError
from galaxy_core.io.fits import (
    ORIGIN,
    band_from_token,
    group_band_files,
    names_bands,
    pixel_scale_arcsec,
    fits_image_count,
    read_fits_image,
    read_fits_images,
    write_fits_cube,
)


def cube(c=3, h=8, w=10, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(1.0, 0.1, (c, h, w)).astype(np.float32)


# --------------------------------------------------------------------------- reading


def test_2d_image_is_one_band(tmp_path):
    data = cube(1)[0]
    hdr = fits.Header()
    hdr["FILTER"] = "r"
    fits.PrimaryHDU(data, header=hdr).writeto(tmp_path / "a.fits")
    img = read_fits_image(tmp_path / "a.fits")
    arr, bands, header = img  # unpacks as a 3-tuple
    assert arr.shape == (1, 8, 10) and arr.dtype == np.float32
    np.testing.assert_array_equal(arr[0], data)
    assert bands == ["r"]
    assert header["FILTER"] == "r"
    assert img.nan_replaced == [0] and img.num_nan_replaced == 0


def test_3d_cube_band_names_from_band_cards(tmp_path):
    data = cube()
    hdr = fits.Header()
    for i, b in enumerate("gri"):
        hdr[f"BAND{i + 1}"] = b
    fits.PrimaryHDU(data, header=hdr).writeto(tmp_path / "c.fits")
    arr, bands, _ = read_fits_image(tmp_path / "c.fits")
    assert bands == ["g", "r", "i"]
    np.testing.assert_array_equal(arr, data)


def test_cube_in_first_extension_with_bands_card_and_big_endian_ints(tmp_path):
    raw = np.arange(2 * 4 * 4, dtype=">i2").reshape(2, 4, 4)
    hdu = fits.ImageHDU(raw)
    hdu.header["BANDS"] = "F606W,F814W"
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(tmp_path / "c.fits")
    arr, bands, _ = read_fits_image(tmp_path / "c.fits")
    assert bands == ["F606W", "F814W"]
    assert arr.dtype == np.float32 and arr.dtype.isnative
    np.testing.assert_array_equal(arr, raw.astype(np.float32))


def test_bscale_bzero_are_applied(tmp_path):
    hdu = fits.PrimaryHDU(np.array([[0, 1], [2, 3]], np.int16))
    hdu.header["BSCALE"] = 0.5
    hdu.header["BZERO"] = 10.0
    hdu.writeto(tmp_path / "s.fits")
    arr, _, _ = read_fits_image(tmp_path / "s.fits")
    np.testing.assert_allclose(arr[0], [[10.0, 10.5], [11.0, 11.5]])


def test_memory_mapped_read_returns_arrays_of_their_own(tmp_path):
    """Plain files are memory-mapped while read: what comes back is converted, owns its memory
    and does not change when the file is written again."""
    raw = np.random.default_rng(0).normal(size=(3, 2, 8, 8)).astype(">f4")  # N images of 2 bands
    path = tmp_path / "samples.fits"
    fits.PrimaryHDU(raw).writeto(path)
    images = read_fits_images(path)
    fits.PrimaryHDU(np.zeros_like(raw)).writeto(path, overwrite=True)
    for i, img in enumerate(images):
        assert img.data.dtype == np.float32 and img.data.dtype.isnative and img.data.flags.writeable
        np.testing.assert_array_equal(img.data, raw[i].astype(np.float32))


@pytest.mark.parametrize("kind", ["uint16", "blank"])
def test_scaled_integers_are_read_without_memory_mapping(tmp_path, kind):
    """astropy cannot memory-map scaled integers: unsigned 16-bit (BZERO 32768) and BLANK pixels
    are still read right."""
    if kind == "uint16":
        values = np.array([[[0, 1], [40000, 65535]], [[5, 6], [7, 8]]], np.uint16)
        fits.PrimaryHDU(values).writeto(tmp_path / "u.fits")  # astropy writes BZERO = 32768
        assert fits.getheader(tmp_path / "u.fits")["BZERO"] == 32768
        arr, _, _ = read_fits_image(tmp_path / "u.fits")
        np.testing.assert_array_equal(arr, values.astype(np.float32))
    else:
        values = np.array([[[1, 2, 3], [4, -99, 6]]], np.int16)
        hdu = fits.PrimaryHDU(values)
        hdu.header["BLANK"] = -99
        hdu.writeto(tmp_path / "b.fits")
        img = read_fits_image(tmp_path / "b.fits")
        assert img.nan_replaced == [1]  # the BLANK pixel, replaced by the median of the others
        np.testing.assert_array_equal(img.data[0], [[1, 2, 3], [4, 3, 6]])


def test_result_pickles(tmp_path):
    import pickle

    fits.PrimaryHDU(cube(2)).writeto(tmp_path / "p.fits")
    img = read_fits_image(tmp_path / "p.fits")
    again = pickle.loads(pickle.dumps(img))
    np.testing.assert_array_equal(again.data, img.data)
    assert again.bands == img.bands and again.nan_replaced == [0, 0] and again.path == img.path


def test_cube_without_names_gets_default_names(tmp_path):
    fits.PrimaryHDU(cube(2)).writeto(tmp_path / "c.fits")
    bands = read_fits_image(tmp_path / "c.fits").bands
    assert bands == ["band1", "band2"] and not names_bands(bands)  # stand-ins, not names to compare
    write_fits_cube(tmp_path / "n.fits", cube(2), bands=["g", "r"])
    assert names_bands(read_fits_image(tmp_path / "n.fits").bands)
    assert names_bands(["band2", "band1"])  # only the stand-ins in their own order are unnamed


def test_one_band_per_hdu_skips_tables_masks_and_empty_primary(tmp_path):
    data = cube()
    hdus = [fits.PrimaryHDU()]
    for b, plane in zip("gri", data):
        hdus.append(fits.ImageHDU(plane, name=b))
    hdus.append(fits.ImageHDU(np.ones((8, 10), np.uint8), name="MASK"))
    hdus.append(fits.BinTableHDU(Table({"x": [1, 2]}), name="CAT"))
    fits.HDUList(hdus).writeto(tmp_path / "m.fits")
    arr, bands, header = read_fits_image(tmp_path / "m.fits")
    assert bands == ["G", "R", "I"]  # EXTNAME is upper-case in FITS
    np.testing.assert_array_equal(arr, data)
    assert header["EXTNAME"] == "G"


def test_filter_keyword_beats_extname(tmp_path):
    hdus = [fits.PrimaryHDU()]
    for b, plane in zip("gr", cube(2)):
        h = fits.ImageHDU(plane, name="SCI")
        h.header["FILTER"] = b
        hdus.append(h)
    fits.HDUList(hdus).writeto(tmp_path / "f.fits")
    assert read_fits_image(tmp_path / "f.fits").bands == ["g", "r"]


def test_degenerate_leading_axis_is_squeezed(tmp_path):
    fits.PrimaryHDU(cube()[None]).writeto(tmp_path / "d.fits")
    assert read_fits_image(tmp_path / "d.fits").data.shape == (3, 8, 10)


def test_gzip_file(tmp_path):
    fits.PrimaryHDU(cube(1)[0]).writeto(tmp_path / "z.fits.gz")
    assert read_fits_image(tmp_path / "z.fits.gz").data.shape == (1, 8, 10)


def test_tile_compressed_fz(tmp_path):
    data = cube()
    hdu = fits.CompImageHDU(data, compression_type="GZIP_2", quantize_level=0)
    for i, b in enumerate("gri"):
        hdu.header[f"BAND{i + 1}"] = b
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(tmp_path / "t.fits.fz")
    img = read_fits_image(tmp_path / "t.fits.fz")
    assert img.bands == ["g", "r", "i"]
    np.testing.assert_array_equal(img.data, data)  # lossless compression


def test_nan_and_inf_replaced_by_band_median(tmp_path):
    data = np.array([[[1.0, 2.0], [3.0, np.nan]], [[np.inf, 5.0], [7.0, 9.0]]], np.float32)
    fits.PrimaryHDU(data).writeto(tmp_path / "n.fits")
    img = read_fits_image(tmp_path / "n.fits")
    # medians of the finite pixels: median(1, 2, 3) = 2, median(5, 7, 9) = 7
    np.testing.assert_array_equal(img.data, [[[1, 2], [3, 2]], [[7, 5], [7, 9]]])
    assert img.nan_replaced == [1, 1] and img.num_nan_replaced == 2


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU(Table({"a": [1.0]}))]),
         "no image data"),
        (lambda: fits.HDUList([fits.PrimaryHDU(np.zeros((2, 2, 2, 4, 4), np.float32))]),
         "more than 4 axes"),
        (lambda: fits.HDUList([fits.PrimaryHDU(np.ones((2, 2, 4, 4), np.float32))]),
         r"holds 2 images .*choose one by its index"),
        (lambda: fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((4, 4))),
                               fits.ImageHDU(np.zeros((5, 4)))]),
         "different shapes"),
        (lambda: fits.HDUList([fits.PrimaryHDU(np.full((4, 4), np.nan, np.float32))]),
         "no finite pixel"),
        (lambda: fits.HDUList([fits.PrimaryHDU(np.zeros((4, 4))),
                               fits.ImageHDU(np.zeros((2, 4, 4)))]),
         "mixes 2-D images and 3-D cubes"),
        (lambda: fits.HDUList([fits.PrimaryHDU(np.arange(16.0))]),
         r"holds a 1-D array of 16 values \(NAXIS = 1\), not an image"),
        (lambda: fits.HDUList([fits.PrimaryHDU(np.zeros((8, 8), np.float32))]),
         r"band 'band1' is blank \(every pixel is 0\)"),
        (lambda: fits.HDUList([fits.PrimaryHDU(np.stack([np.arange(16.0).reshape(4, 4), np.full((4, 4), 7.0)]))]),
         r"band 'band2' is blank \(every pixel is 7\)"),
        (lambda: fits.HDUList([fits.PrimaryHDU(np.arange(16.0)[None])]),
         r"holds an array of shape \(1, 16\), one pixel high or wide, not an image"),
        (lambda: fits.HDUList([fits.PrimaryHDU(np.where(np.eye(4) > 0, 3.0, np.nan).astype(np.float32))]),
         r"band 'band1' is blank \(every finite pixel is 3\)"),
    ],
    ids=["table-only", "5d", "4d-no-index", "shape-mismatch", "all-nan", "mixed-dims", "1d", "all-zero", "one-blank-band", "1xN",
         "blank-but-nan"],
)
def test_unusable_files_raise_data_error_naming_the_file(tmp_path, make, match):
    path = tmp_path / "bad.fits"
    make().writeto(path)
    with pytest.raises(DataError, match=match) as e:
        read_fits_image(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("truncate", [True, False])
def test_corrupt_file_raises_data_error(tmp_path, truncate):
    path = tmp_path / "broken.fits"
    if truncate:
        fits.PrimaryHDU(np.zeros((64, 64), np.float32)).writeto(path)
        path.write_bytes(path.read_bytes()[:4000])
    else:
        path.write_bytes(b"this is not a FITS file" * 10)
    with pytest.raises(DataError, match="cannot read as FITS") as e:
        read_fits_image(path)
    assert str(path) in str(e.value)


def test_pixel_scale_from_cd_matrix_and_cdelt():
    h = fits.Header()
    assert pixel_scale_arcsec(h) is None
    h["CDELT1"], h["CDELT2"] = -0.396 / 3600, 0.396 / 3600
    assert pixel_scale_arcsec(h) == pytest.approx(0.396)
    # 0.05"/px rotated by 30 degrees: |det| = scale**2 regardless of the rotation
    s, t = 0.05 / 3600, np.radians(30)
    h["CD1_1"], h["CD1_2"] = -s * np.cos(t), s * np.sin(t)
    h["CD2_1"], h["CD2_2"] = s * np.sin(t), s * np.cos(t)
    assert pixel_scale_arcsec(h) == pytest.approx(0.05)


# --------------------------------------------------------------------------- grouping


def test_group_band_files_by_name(tmp_path):
    names = ["obj001_g.fits", "obj001-r.fits", "obj001.i.fits", "obj002_i.fits.gz", "obj002_g.fit",
             "single.fits", "hst_F814W.fits", "hst_f435w.fits", "run_001.fits"]
    groups = group_band_files([tmp_path / n for n in names])
    key = str(tmp_path / "obj001")
    assert list(groups[key]) == ["g", "r", "i"]  # ordered blue to red
    assert groups[key]["r"] == tmp_path / "obj001-r.fits"
    assert list(groups[str(tmp_path / "obj002")]) == ["g", "i"]
    assert groups[str(tmp_path / "single")] == {"": tmp_path / "single.fits"}
    assert list(groups[str(tmp_path / "hst")]) == ["F435W", "F814W"]
    assert groups[str(tmp_path / "run_001")] == {"": tmp_path / "run_001.fits"}  # 001 is no band


def test_group_band_files_keeps_folders_apart(tmp_path):
    groups = group_band_files([tmp_path / "a" / "x_g.fits", tmp_path / "b" / "x_r.fits"])
    assert len(groups) == 2


def test_group_band_files_duplicate_band(tmp_path):
    with pytest.raises(DataError, match="also given by"):
        group_band_files([tmp_path / "x_g.fits", tmp_path / "x-g.fits"])


@pytest.mark.parametrize(
    "token, band",
    [("g", "g"), ("R", "R"), ("ks", "Ks"), ("nuv", "NUV"), ("f160w", "F160W"), ("F150W2", "F150W2"),
     ("img", None), ("001", None), ("gr", None)],
)
def test_band_tokens(token, band):
    assert band_from_token(token) == band


# --------------------------------------------------------------------------- writing


def test_write_cube_round_trip_with_honest_cards(tmp_path):
    data = cube()
    path = write_fits_cube(
        tmp_path / "out" / "cube.fits",
        data,
        bands=["g", "r", "i"],
        bunit="nanomaggy",
        pixel_scale_arcsec=0.396,
        header_cards={
            "SEED": 42,
            "TRUNC": (0.7, "truncation psi"),
            "checkpoint": "dcgan-sim-64 " + "x" * 120,  # long key and long value
            "stretch": {"type": "asinh", "lo": [0.1, 0.2]},
            "ratio": float("nan"),
            "objname": "M\u00e9ssier 51",
        },
    )
    arr, bands, hdr = read_fits_image(path)
    np.testing.assert_array_equal(arr, data)
    assert bands == ["g", "r", "i"]
    assert hdr["BUNIT"] == "nanomaggy"
    assert hdr["PIXSCALE"] == 0.396
    assert hdr["ORIGIN"] == ORIGIN
    assert len(hdr["DATE"]) == 19 and hdr["DATE"][10] == "T"
    assert hdr["SEED"] == 42 and hdr.comments["TRUNC"] == "truncation psi"
    assert hdr["CHECKPOINT"] == "dcgan-sim-64 " + "x" * 120
    assert hdr["STRETCH"] == '{"type":"asinh","lo":[0.1,0.2]}'
    assert hdr["RATIO"] == "nan"
    assert hdr["OBJNAME"] == "M\\xe9ssier 51"
    assert [p.name for p in path.parent.iterdir()] == ["cube.fits"]  # no temporary left


def test_write_stack_with_catalog_and_unknown_unit(tmp_path):
    data = np.stack([cube(seed=s) for s in range(4)]).astype(np.float16)  # (N, C, H, W)
    table = Table({"seed": np.arange(4), "mag_r": np.linspace(17, 18, 4)})
    path = write_fits_cube(tmp_path / "s.fits", data, bands=["g", "r", "i"], table=table)
    with fits.open(path) as hdul:
        assert hdul[0].data.shape == (4, 3, 8, 10) and hdul[0].data.dtype == np.dtype(">f4")
        assert hdul[0].header["NAXIS3"] == 3 and hdul[0].header["NAXIS4"] == 4
        assert "BUNIT" not in hdul[0].header  # no made-up unit name where the unit is not known
        assert "pixel unit not known (no BUNIT)" in str(hdul[0].header["COMMENT"])
        assert hdul[0].header["CREATOR"].startswith("Galaxy GAN Studio ")
        assert hdul["CATALOG"].data["seed"].tolist() == [0, 1, 2, 3]


def test_write_gzip(tmp_path):
    path = write_fits_cube(tmp_path / "c.fits.gz", cube(2), bands=["u", "z"])
    assert path.read_bytes()[:2] == b"\x1f\x8b"
    assert read_fits_image(path).bands == ["u", "z"]


def test_write_checks_band_count(tmp_path):
    with pytest.raises(ValueError, match="2 band names for 3 channels"):
        write_fits_cube(tmp_path / "x.fits", cube(), bands=["g", "r"])


def test_damaged_gzip_fits_fails_at_once(tmp_path):
    # One byte changed inside the compressed stream. astropy's own gzip reading skips the CRC
    # check and returns the damaged pixels (other damage made it loop for ever looking for
    # an END card, found by tests/test_fuzz_readers.py); the reader checks the CRC first.
    path = tmp_path / "g.fits.gz"
    write_fits_cube(path, cube(), bands=["g", "r", "i"])
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"g\.fits\.gz: cannot read as FITS \(.*(CRC|Error)"):
        read_fits_image(path)
    arr, bands, _ = read_fits_image(_rewrite(tmp_path / "ok.fits.gz"))
    assert arr.shape == (3, 8, 10) and bands == ["g", "r", "i"]


def _rewrite(path):
    write_fits_cube(path, cube(), bands=["g", "r", "i"])
    return path


def test_every_written_unit_is_one_astropy_reads(tmp_path):
    """A BUNIT the writer puts in a file is read back as that unit by astropy's CCDData, the
    dimensionless "" included; a file without one needs the reader to say the unit."""
    import astropy.units as u
    from astropy.nddata import CCDData

    for unit, expected in (("nanomaggy", u.nanomaggy), ("", u.dimensionless_unscaled), ("adu", u.adu)):
        path = write_fits_cube(tmp_path / f"u{len(unit)}.fits", cube(), bands=["g", "r", "i"], bunit=unit)
        assert CCDData.read(path).unit == expected
    path = write_fits_cube(tmp_path / "none.fits", cube(), bands=["g", "r", "i"])
    with pytest.raises(ValueError, match="unit"):
        CCDData.read(path)


def test_a_channels_last_cube_is_read_as_its_few_bands(tmp_path):
    """A (H, W, 3) array written as numpy holds it (NAXIS1 = 3) is three bands of H x W, not
    H bands three pixels wide; a real (bands, H, W) cube is read as before."""
    rgb = np.random.default_rng(0).random((20, 16, 3)).astype(np.float32)
    fits.PrimaryHDU(rgb).writeto(tmp_path / "last.fits")
    img = read_fits_image(tmp_path / "last.fits")
    assert img.data.shape == (3, 20, 16) and img.data.flags.c_contiguous  # bands first in memory too
    np.testing.assert_array_equal(img.data[1], rgb[..., 1])
    fits.PrimaryHDU(np.moveaxis(rgb, -1, 0)).writeto(tmp_path / "first.fits")
    np.testing.assert_array_equal(read_fits_image(tmp_path / "first.fits").data, img.data)


@pytest.mark.parametrize("name", ["samples.fits", "samples.fits.gz"])
def test_a_cube_of_several_images_reads_one_by_index_or_all(tmp_path, name):
    """``(N, C, H, W)`` as ``galaxygan sample`` writes it: each image by its index, or all of them."""
    x = np.stack([cube(3, seed=s) for s in range(4)])
    path = write_fits_cube(tmp_path / name, x, bands=["g", "r", "i"], bunit="nanomaggy")
    assert fits_image_count(path) == 4
    img = read_fits_image(path, 2)
    assert img.index == 2 and img.bands == ["g", "r", "i"] and img.header["BUNIT"] == "nanomaggy"
    np.testing.assert_array_equal(img.data, x[2])
    every = read_fits_images(path)
    assert [i.index for i in every] == [0, 1, 2, 3]
    for i, im in enumerate(every):
        np.testing.assert_array_equal(im.data, x[i])
    with pytest.raises(DataError, match=r"holds 4 images; index 4 is out of range \(0 to 3\)"):
        read_fits_image(path, 4)
    # one band per image is still four images, not one image of four bands
    one_band = write_fits_cube(tmp_path / "r.fits", x[:, 1:2], bands=["r"])
    assert fits_image_count(one_band) == 4 and read_fits_image(one_band, 3).data.shape == (1, 8, 10)
    # a file of one image: index 0 or none, nothing else
    single = write_fits_cube(tmp_path / "one.fits", x[0], bands=["g", "r", "i"])
    assert fits_image_count(single) == 1 and read_fits_image(single).index is None
    np.testing.assert_array_equal(read_fits_image(single, 0).data, x[0])
    with pytest.raises(DataError, match="holds one image; index 1 is out of range"):
        read_fits_image(single, 1)


def test_a_blank_image_of_a_cube_is_named_and_can_be_left_out(tmp_path):
    x = np.stack([cube(2, seed=s) for s in range(3)])
    x[1, 0] = 5.0
    path = write_fits_cube(tmp_path / "s.fits", x, bands=["g", "r"])
    with pytest.raises(DataError, match=r"s.fits \[image 1\]: band 'g' is blank"):
        read_fits_images(path)
    bad = []
    kept = read_fits_images(path, bad=bad)
    assert [i.index for i in kept] == [0, 2] and [b[0] for b in bad] == [1] and "blank" in bad[0][1]
    np.testing.assert_array_equal(read_fits_image(path, 2).data, x[2])
