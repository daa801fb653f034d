"""User folders of JPG/PNG/TIFF or FITS files turned into prepared datasets."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from PIL import Image

from galaxy_core.data.folder import prepare_folder, sixteen_bit_to_uint8
from galaxy_core.data.sources import load_dataset
from galaxy_core.data.transforms import centre_crop, resize
from galaxy_core.errors import DataError
from galaxy_core.io.stretch import MINMAX_DESCRIPTION, AsinhStretch


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Every test gets an empty cache, so nothing is reused from an earlier run."""
    monkeypatch.setenv("GALAXYGAN_CACHE", str(tmp_path / "cache"))


def prep(path, **kw):
    opts = dict(resolution=32, crop=1.0, normalisation="asinh", rebuild=False, progress=False)
    return prepare_folder(path, **{**opts, **kw})


def galaxy_rgb(rng, size=424) -> np.ndarray:
    """(size, size, 3) uint8: an inclined yellowish exponential disc on a dark noisy sky."""
    yy, xx = np.mgrid[0:size, 0:size] - size / 2
    pa, q = rng.uniform(0, np.pi), rng.uniform(0.4, 1.0)
    u = xx * np.cos(pa) + yy * np.sin(pa)
    v = (-xx * np.sin(pa) + yy * np.cos(pa)) / q
    disc = np.exp(-np.hypot(u, v) / rng.uniform(15, 30))
    rgb = disc[..., None] * np.array([1.0, 0.85, 0.6]) + rng.normal(0, 0.02, (size, size, 3))
    return (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)


def jpg_folder(root, n=4, seed=0):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(galaxy_rgb(rng)).save(root / f"gal{i:03d}.jpg", quality=92)
    return root


def galaxy_flux(rng, size, bands=3) -> np.ndarray:
    """(bands, size, size) float32 flux: sky noise plus an exponential disc, redder brighter."""
    yy, xx = np.mgrid[0:size, 0:size] - (size - 1) / 2
    disc = np.exp(-np.hypot(xx, yy) / 3.0)
    amp = rng.uniform(20, 60) * np.linspace(0.6, 1.3, bands)[:, None, None]
    return (amp * disc + rng.normal(0, 0.05, (bands, size, size))).astype(np.float32)


def write_cube(path, data, bands=("g", "r", "i"), **cards):
    hdr = fits.Header()
    for i, b in enumerate(bands):
        hdr[f"BAND{i + 1}"] = b
    for k, v in cards.items():
        hdr[k] = v
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.PrimaryHDU(data, header=hdr).writeto(path)


# --------------------------------------------------------------------------- 8-bit images


def test_jpg_folder_with_a_corrupt_file(tmp_path):
    folder = jpg_folder(tmp_path / "zoo", n=4)
    good = (folder / "gal000.jpg").read_bytes()
    (folder / "broken.jpg").write_bytes(good[: len(good) // 3])  # truncated JPEG
    (folder / "notes.txt").write_text("not an image")
    (folder / ".hidden.jpg").write_bytes(b"junk")
    sub = folder / "more"
    jpg_folder(sub, n=1, seed=9)

    ds = prep(folder, crop=0.5)
    assert len(ds) == 5
    assert ds.images.shape == (5, 3, 32, 32) and ds.images.dtype == np.uint8
    assert ds.channels == ["R", "G", "B"] and not ds.physical
    m = ds.manifest
    assert m["name"] == "zoo" and m["source"] == str(folder.resolve())
    assert m["kind"] == "image" and m["stretch"] is None
    assert m["preprocess"]["crop"] == 0.5 and m["preprocess"]["resolution"] == 32
    assert [s["file"] for s in m["skipped"]] == ["broken.jpg"]
    assert "truncated" in m["skipped"][0]["reason"]
    assert list(ds.catalog["file"]) == ["gal000.jpg", "gal001.jpg", "gal002.jpg", "gal003.jpg",
                                        "more/gal000.jpg"]
    # a galaxy in the middle, sky at the edge; red brighter than blue (yellowish disc)
    img = ds.images[0].astype(int)
    assert img[:, 16, 16].min() > 80 and img[:, 0, 0].max() < 40
    assert img[0, 16, 16] > img[2, 16, 16]


def test_a_copy_of_a_prepared_folder_shares_its_arrays_but_keeps_its_own_name(tmp_path):
    """Two folders of the same files share one prepared copy; each is named and sourced as
    itself (a model trained on the copy must not be recorded as trained on the first folder)."""
    import shutil

    first = jpg_folder(tmp_path / "zoo", n=3)
    shutil.copytree(first, tmp_path / "zooB")
    a, b = prep(first), prep(tmp_path / "zooB")
    assert a.root == b.root  # prepared once
    assert (a.name, b.name) == ("zoo", "zooB")
    assert b.manifest["source"] == str((tmp_path / "zooB").resolve()) != a.manifest["source"]
    assert prep(first).name == "zoo"  # and the first keeps its own


def test_uniform_colour_survives_crop_and_resize(tmp_path):
    folder = tmp_path / "flat"
    folder.mkdir()
    # each with one dark pixel in the middle of its top row, which the 0.7 crop cuts away (an
    # image of one colour everywhere is blank and skipped)
    _marked_at(Image.new("RGB", (300, 180), (200, 90, 17)), (150, 0)).save(folder / "flat.png")  # non-square
    _marked_at(Image.new("RGB", (424, 424), (200, 90, 17)), (212, 0)).save(folder / "flat.jpg", quality=95)
    ds = prep(folder, crop=0.7)
    by_file = dict(zip(ds.catalog["file"], ds.images))
    np.testing.assert_array_equal(by_file["flat.png"][:, 10, 20], [200, 90, 17])
    assert (by_file["flat.png"] == np.array([200, 90, 17])[:, None, None]).all()
    # JPEG is lossy: within a few levels
    assert np.abs(by_file["flat.jpg"].astype(int) - [[[200]], [[90]], [[17]]]).max() <= 3


def _marked_at(im: Image.Image, xy) -> Image.Image:
    im.putpixel(xy, (0, 0, 0))
    return im


def _marked(im: Image.Image, value) -> Image.Image:
    """``im`` with its corner pixel set to ``value``: not blank (blank images are skipped)."""
    im.putpixel((0, 0), value)
    return im


def test_grey_modes_give_one_channel(tmp_path):
    folder = tmp_path / "grey"
    folder.mkdir()
    _marked(Image.new("L", (50, 50), 77), 0).save(folder / "l.png")
    deep = np.full((40, 40), 257 * 100, np.uint16)
    deep[0, 0] = 0
    Image.fromarray(deep).save(folder / "deep.png")  # I;16
    _marked(Image.new("1", (20, 20), 1), 0).save(folder / "bw.png")
    with Image.open(folder / "deep.png") as im:
        assert im.mode.startswith("I")
    ds = prep(folder, resolution=32)
    assert ds.channels == ["L"] and ds.images.shape == (3, 1, 32, 32)
    by_file = {f: img[:, 4:, 4:] for f, img in zip(ds.catalog["file"], ds.images)}  # away from the mark
    assert (by_file["l.png"] == 77).all()
    assert (by_file["deep.png"] == 100).all()  # 25700 / 257
    assert (by_file["bw.png"] == 255).all()


def test_mixed_modes_give_rgb(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    _marked(Image.new("L", (64, 64), 77), 0).save(folder / "a_grey.png")
    _marked(Image.new("RGBA", (64, 64), (200, 100, 50, 128)), (0, 0, 0, 255)).save(folder / "b_rgba.png")
    pal = _marked(Image.new("RGB", (64, 64), (10, 200, 30)), (0, 0, 0)).convert("P", palette=Image.Palette.ADAPTIVE)
    pal.save(folder / "c_palette.png")
    _marked(Image.new("CMYK", (64, 64), (0, 0, 0, 0)), (0, 0, 0, 255)).save(folder / "d_cmyk.tif")
    ds = prep(folder)
    assert ds.channels == ["R", "G", "B"]
    imgs = dict(zip(ds.catalog["file"], ds.images))
    assert (imgs["a_grey.png"][:, 4:, 4:] == 77).all()  # grey repeated in R, G and B
    # alpha 128 over black: round(c * 128 / 255) = 100, 50, 25
    np.testing.assert_array_equal(imgs["b_rgba.png"][:, 5, 5], [100, 50, 25])
    np.testing.assert_array_equal(imgs["c_palette.png"][:, 5, 5], [10, 200, 30])
    np.testing.assert_array_equal(imgs["d_cmyk.tif"][:, 5, 5], [255, 255, 255])  # no ink


def test_blank_images_are_skipped_and_named(tmp_path):
    """A blank image (every pixel one value: a failed download, a cutout off the survey's
    footprint) holds no galaxy; it is skipped and listed, and the rest are prepared."""
    folder = tmp_path / "some_blank"
    folder.mkdir()
    Image.new("RGB", (64, 64), (0, 0, 0)).save(folder / "black.png")
    Image.new("L", (64, 64), 255).save(folder / "white.png")
    Image.new("RGB", (64, 64), (135, 206, 235)).save(folder / "sky_blue.png")  # one colour: no galaxy either
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / "real.png")
    ds = prep(folder)
    assert list(ds.catalog["file"]) == ["real.png"]
    reasons = {s["file"]: s["reason"] for s in ds.manifest["skipped"]}
    assert reasons == {"black.png": "blank: every pixel is (0, 0, 0), so it holds no galaxy",
                       "sky_blue.png": "blank: every pixel is (135, 206, 235), so it holds no galaxy",
                       "white.png": "blank: every pixel is (255, 255, 255), so it holds no galaxy"}
    (folder / "real.png").unlink()
    with pytest.raises(DataError, match=r"no usable image: black.png: blank: every pixel is \(0, 0, 0\)"):
        prep(folder)
    # a faint 16-bit image becomes flat only when brought to 8 bits: the reason says so
    faint = tmp_path / "faint"
    faint.mkdir()
    Image.fromarray(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) % 120).save(faint / "faint16.png")
    with pytest.raises(DataError, match=r"faint16.png: blank after conversion to 8 bits: every pixel is \(0\)"):
        prep(faint)


def test_sixteen_bit_scaling_is_hand_checked():
    np.testing.assert_array_equal(sixteen_bit_to_uint8(np.array([0, 128, 257, 65535, 70000])),
                                  [0, 0, 1, 255, 255])


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("nothing here")
    with pytest.raises(DataError, match="holds no image or FITS file") as e:
        prep(tmp_path / "empty")
    assert "empty" in str(e.value)


def test_every_file_corrupt(tmp_path):
    folder = tmp_path / "junk"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (folder / "b.png").write_bytes(b"")
    with pytest.raises(DataError, match="no usable image: ") as e:
        prep(folder)
    assert "a.jpg" in str(e.value) and "b.png" in str(e.value) and str(folder) in str(e.value)


def test_mixing_fits_and_jpg_is_refused(tmp_path):
    folder = jpg_folder(tmp_path / "mix", n=1)
    write_cube(folder / "x.fits", galaxy_flux(np.random.default_rng(0), 16))
    with pytest.raises(DataError, match="mixes 8-bit images"):
        prep(folder)


# --------------------------------------------------------------------------- cache


def test_cache_is_reused_and_rebuilt_when_a_source_changes(tmp_path):
    folder = jpg_folder(tmp_path / "cached", n=2)
    first = prep(folder)
    npy = first.root / "images.npy"
    stamp = npy.stat().st_mtime_ns
    again = prep(folder)
    assert again.root == first.root and again.manifest["key"] == first.manifest["key"]
    assert npy.stat().st_mtime_ns == stamp  # not decoded and written again
    assert first.root.parent.name == "prepared" and first.root.name.startswith("folder-")

    forced = prep(folder, rebuild=True)
    assert forced.root == first.root and (forced.root / "images.npy").stat().st_mtime_ns != stamp

    other_size = prep(folder, resolution=64)
    assert other_size.root != first.root

    Image.fromarray(galaxy_rgb(np.random.default_rng(99))).save(folder / "gal001.jpg")
    changed = prep(folder)
    assert changed.manifest["key"] != first.manifest["key"]
    assert not np.array_equal(changed.images[1], first.images[1])


def test_images_ignore_normalisation_in_the_key(tmp_path):
    folder = jpg_folder(tmp_path / "norm", n=1)
    assert prep(folder, normalisation="asinh").root == prep(folder, normalisation="minmax").root


def test_load_dataset_routes_folders_here(tmp_path):
    folder = jpg_folder(tmp_path / "routed", n=2)
    ds = load_dataset(folder, resolution=32, progress=False)
    assert ds.images.shape == (2, 3, 32, 32)


# --------------------------------------------------------------------------- FITS


def fits_folder(root, sizes=(40, 48, 40), seed=0):
    rng = np.random.default_rng(seed)
    for i, size in enumerate(sizes):
        write_cube(root / f"cube{i}.fits", galaxy_flux(rng, size), CDELT1=-0.4 / 3600,
                   CDELT2=0.4 / 3600, BUNIT="nanomaggy", MAGZP=22.5)
    return root


def test_fits_cubes_asinh(tmp_path):
    folder = fits_folder(tmp_path / "cubes", sizes=(40, 40, 40))
    nan_file = folder / "cube1.fits"
    with fits.open(nan_file, mode="update") as hdul:
        hdul[0].data[1, :2, :3] = np.nan  # 6 bad pixels in band r
    table_only = fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU(Table({"a": [1]}))])
    table_only.writeto(folder / "catalogue.fits")

    ds = prep(folder, resolution=16, crop=0.8)
    assert ds.physical and ds.channels == ["g", "r", "i"]
    assert ds.images.shape == (3, 3, 16, 16) and ds.images.dtype == np.float16
    assert float(ds.images.min()) >= -1 and float(ds.images.max()) <= 1
    m = ds.manifest
    assert m["kind"] == "physical" and m["num_nan_replaced"] == 6
    assert [s["file"] for s in m["skipped"]] == ["catalogue.fits"]
    assert "no image data" in m["skipped"][0]["reason"]
    assert 0 <= m["clip_fraction"] < 0.05
    assert m["flux_unit"] == "nanomaggy" and m["zero_point"] == 22.5
    # 32 px kept (0.8 x 40) resized to 16: 2 source pixels per pixel, 0.8 "/px
    assert m["pixel_scale_arcsec"] == pytest.approx(0.8)
    assert m["preprocess"]["source_pixels_per_pixel"] == pytest.approx(4.0)
    assert list(ds.catalog["num_nan_replaced"]) == [0, 6, 0]

    # the stored values are the stretch of the cropped, resized flux: invert and compare
    stretch = AsinhStretch.from_dict(m["stretch"])
    with fits.open(folder / "cube0.fits") as hdul:
        flux = resize(centre_crop(hdul[0].data.astype(np.float32), 0.8), 16)
    stored = ds.images[0].astype(np.float32)
    inside = np.abs(stored) < 0.999
    back = stretch.inverse(stored)
    scale = np.asarray(stretch.softening)[:, None, None] * np.ones_like(back)
    # float16 keeps ~3 digits of the stretched value; in flux that is ~1e-3 of the local
    # slope d f / d y = softening * cosh(u) * (u_hi - u_lo) / 2
    np.testing.assert_allclose(back[inside], flux[inside], rtol=5e-3, atol=float(scale.max()) * 0.1)


def test_a_blank_fits_cube_is_skipped_and_named(tmp_path):
    folder = fits_folder(tmp_path / "with_blank", sizes=(40, 40))
    write_cube(folder / "off_footprint.fits", np.zeros((3, 40, 40), np.float32))
    ds = prep(folder)
    assert sorted(ds.catalog["file"]) == ["cube0.fits", "cube1.fits"]
    (skip,) = ds.manifest["skipped"]
    assert skip["file"] == "off_footprint.fits" and "is blank (every pixel is 0)" in skip["reason"]


@pytest.mark.parametrize("spill", [False, True])
def test_a_file_of_several_images_gives_each_of_them(tmp_path, monkeypatch, spill):
    """A ``(N, C, H, W)`` cube (``samples.fits`` as the sampler writes it) is N images: the same
    images, in the same order, as N files of one image each; a blank one is skipped alone."""
    import galaxy_core.data.folder as folder_module
    from galaxy_core.io.fits import write_fits_cube

    if spill:  # the out-of-memory arrays, which grow when a file holds more images than files
        monkeypatch.setattr(folder_module, "_SPILL_BYTES", 0)
    rng = np.random.default_rng(5)
    x = np.stack([galaxy_flux(rng, 40) for _ in range(5)])
    x[3, 2] = 4.0  # image 3's i band is blank
    cubes, singles = tmp_path / "cubes", tmp_path / "singles"
    cubes.mkdir()
    write_fits_cube(cubes / "a.fits", x[0], bands=["g", "r", "i"])
    write_fits_cube(cubes / "samples.fits", x[1:], bands=["g", "r", "i"])
    for i in (0, 1, 2, 4):
        write_cube(singles / f"img{i}.fits", x[i])
    a, b = prep(cubes), prep(singles)
    assert list(a.catalog["file"]) == ["a.fits", "samples.fits#0", "samples.fits#1", "samples.fits#3"]
    (skip,) = a.manifest["skipped"]
    assert skip["file"] == "samples.fits#2" and "band 'i' is blank (every pixel is 4)" in skip["reason"]
    assert a.channels == b.channels == ["g", "r", "i"]
    np.testing.assert_array_equal(np.asarray(a.images), np.asarray(b.images))
    assert a.stretch == b.stretch
    if spill:
        assert not list(a.root.parent.glob(".spill.tmp-*"))


def test_fits_minmax(tmp_path):
    folder = fits_folder(tmp_path / "mm")
    ds = prep(folder, normalisation="minmax")
    assert ds.stretch == MINMAX_DESCRIPTION
    for img in ds.images:
        assert float(img.min()) == -1.0 and float(img.max()) == 1.0
    assert ds.manifest["preprocess"]["normalisation"] == "minmax"


def test_fits_normalisation_changes_the_key(tmp_path):
    folder = fits_folder(tmp_path / "key")
    assert prep(folder).root != prep(folder, normalisation="minmax").root


def test_per_band_files_become_multiband(tmp_path):
    folder = tmp_path / "bands"
    folder.mkdir()
    rng = np.random.default_rng(3)
    sources = {}
    for obj in ("a", "b"):
        sources[obj] = galaxy_flux(rng, 24)
        for band, plane in zip("gri", sources[obj]):
            fits.PrimaryHDU(plane).writeto(folder / f"{obj}_{band}.fits")
    ds = prep(folder, resolution=32)
    assert ds.channels == ["g", "r", "i"] and ds.images.shape == (2, 3, 32, 32)
    assert list(ds.catalog["file"]) == ["a[g,r,i]", "b[g,r,i]"]
    # bands are stacked in order: undoing the stretch gives back each band's own flux
    stretch = AsinhStretch.from_dict(ds.stretch)
    back = stretch.inverse(ds.images[1].astype(np.float32))
    expected = resize(sources["b"], 32)
    np.testing.assert_allclose(back[:, 16, 16], expected[:, 16, 16], rtol=0.02)
    assert back[2, 16, 16] > back[1, 16, 16] > back[0, 16, 16]  # redder is brighter


def test_large_arrays_are_built_in_a_temporary_file(tmp_path, monkeypatch):
    # Force the out-of-memory path (normally above 1 GiB) and check nothing is left behind.
    import galaxy_core.data.folder as folder_module

    monkeypatch.setattr(folder_module, "_SPILL_BYTES", 0)
    folder = fits_folder(tmp_path / "spill")
    ds = prep(folder)
    assert ds.images.shape == (3, 3, 32, 32) and np.isfinite(ds.images).all()
    assert not list(ds.root.parent.glob(".spill.tmp-*"))


def test_fits_with_different_bands_is_refused(tmp_path):
    folder = fits_folder(tmp_path / "odd")
    write_cube(folder / "zz_odd.fits", galaxy_flux(np.random.default_rng(1), 40, bands=2),
               bands=("g", "r"))
    with pytest.raises(DataError, match="same bands") as e:
        prep(folder)
    assert "zz_odd.fits" in str(e.value) and "cube0" not in str(e.value)


def test_single_fits_file(tmp_path):
    path = tmp_path / "one.fits.gz"
    write_cube(path, galaxy_flux(np.random.default_rng(0), 30))
    ds = prep(path)
    assert ds.name == "one" and len(ds) == 1 and ds.channels == ["g", "r", "i"]


def test_single_table_only_fits_file(tmp_path):
    path = tmp_path / "table.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU(Table({"a": [1]}))]).writeto(path)
    with pytest.raises(DataError, match="no image data"):
        prep(path)


def test_a_prepared_folder_cut_short_is_prepared_again_not_trusted(tmp_path, monkeypatch, noise_pngs):
    """An images.npy cut in half (a copy or a disk that filled up) is found when the dataset is
    opened: opening it names the file and the damage, and preparing the folder again rebuilds
    it instead of handing training a broken memory map."""
    from galaxy_core.data.prepared import open_prepared
    from galaxy_core.data.sources import load_dataset
    from galaxy_core.errors import DataError

    monkeypatch.setenv("GALAXYGAN_CACHE", str(tmp_path / "cache"))
    src = noise_pngs(tmp_path / "imgs", 6)
    ds = load_dataset(src, resolution=32, progress=False)
    good = np.array(ds.images)
    npy = ds.root / "images.npy"
    npy.write_bytes(npy.read_bytes()[: npy.stat().st_size // 2])
    with pytest.raises(DataError, match="images.npy: damaged"):
        open_prepared(ds.root)
    again = load_dataset(src, resolution=32, progress=False)
    np.testing.assert_array_equal(np.array(again.images), good)


def test_band_files_holding_several_images_are_skipped_with_the_reason(tmp_path):
    folder = tmp_path / "bandcubes"
    folder.mkdir()
    rng = np.random.default_rng(4)
    for band in "gr":
        fits.PrimaryHDU(np.abs(rng.normal(1, 0.1, (3, 1, 24, 24))).astype(np.float32)).writeto(folder / f"obj_{band}.fits")
    write_cube(folder / "other.fits", galaxy_flux(rng, 24, bands=2), bands=("g", "r"))
    ds = prep(folder, resolution=16)
    assert list(ds.catalog["file"]) == ["other.fits"]
    (skip,) = ds.manifest["skipped"]
    assert skip["file"] == "obj_g.fits"
    assert "named as band 'g' of one galaxy but holds 3 images; a band file holds one 2-D image" in skip["reason"]


def test_a_broken_link_in_a_folder_is_listed_as_skipped(tmp_path):
    folder = jpg_folder(tmp_path / "zoo", n=2)
    (folder / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    ds = prep(folder)
    assert len(ds) == 2
    assert [(s["file"], s["reason"].split(" (")[0]) for s in ds.manifest["skipped"]] == \
        [("gone.jpg", "a link whose target is missing")]
