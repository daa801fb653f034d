"""Tests for the built-in ``hdf`` dataset (galaxy_core/data/hdf.py).

The reference numbers below were measured with scikit-image 0.26 and photutils 3.0 and are
the ones stated in docs/datasets/hdf.md; a change in either library or in the detection
settings that moves them must update both.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from galaxy_core.data import hdf, load_dataset
from galaxy_core.errors import DataError

DETECTED = 1752
USABLE = 418
KEPT = {32: 383, 64: 375}
SKIPPED = {
    32: dict(border=25, too_small=1289, star=4, near_star=16, too_large=18, off_field=17),
    64: dict(border=25, too_small=1289, star=4, near_star=16, too_large=0, off_field=43),
}
AREA_LO, AREA_HI = 73.0, 127.0

COLUMNS = [
    "id", "x", "y", "area", "flux_r", "flux_g", "flux_b", "flux_total", "kron_flux",
    "semimajor_axis", "semiminor_axis", "ellipticity", "orientation", "size_class",
]  # fmt: skip


@pytest.fixture(scope="module")
def datasets():
    """The 32 and 64 px datasets from the shared test cache (built once if missing)."""
    return {res: hdf.prepare_hdf(resolution=res, progress=False) for res in (32, 64)}


def _disc(res: int, radius: float) -> np.ndarray:
    c = (res - 1) / 2  # centre of an even-sided stamp lies between pixels
    yy, xx = np.mgrid[:res, :res]
    return np.hypot(xx - c, yy - c) <= radius


def test_field_is_the_skimage_image():
    field = hdf.hdf_field()
    assert field.shape == (872, 1000, 3) and field.dtype == np.uint8
    field[:] = 0  # a copy: the cached field is untouched
    assert hdf.hdf_field().max() == 255


def test_catalog_counts_columns_and_size_classes():
    cat = hdf.hdf_catalog()
    assert len(cat) == DETECTED
    assert set(COLUMNS + ["usable", "reject"]) <= set(cat.colnames)
    assert str(cat["orientation"].unit) == "deg" and str(cat["x"].unit) == "pix"
    assert int(cat["usable"].sum()) == USABLE
    assert (cat.meta["AREA_LO"], cat.meta["AREA_HI"]) == (AREA_LO, AREA_HI)
    usable = cat[cat["usable"]]
    fractions = [np.mean(usable["size_class"] == c) for c in hdf.SIZE_CLASSES]
    assert all(0.28 < f < 0.39 for f in fractions), fractions
    area = np.asarray(cat["area"])
    expected = np.where(area < AREA_LO, "small", np.where(area < AREA_HI, "medium", "large"))
    assert np.array_equal(np.asarray(cat["size_class"]), expected)
    assert np.all(np.isfinite(usable["kron_flux"]))
    assert np.all(usable["semimajor_axis"] >= usable["semiminor_axis"])


def test_area_terciles_that_leave_a_class_empty_are_refused():
    """Three quarters of the usable sources at one area: both terciles fall on it, so nothing is
    small or medium."""
    area = np.array([60.0] * 9 + [70.0, 80.0, 90.0, 5.0])
    usable = area >= 50  # the 5 pix2 speck is not usable and does not count
    assert hdf.empty_size_classes(area[usable], 60.0, 60.0) == ["small", "medium"]
    with pytest.raises(DataError, match=r"hdf: the area terciles 60 and 60 pix2 of the 12 usable sources "
                                        r"leave no small or medium source"):
        hdf._size_classes(area, usable)
    cls, lo, hi = hdf._size_classes(np.arange(50.0, 62.0), np.ones(12, bool))
    assert (lo, hi) == (53.67, 57.33) and list(cls).count("small") == 4


@pytest.mark.parametrize("res", [32, 64])
def test_kept_stamp_counts_are_stable(datasets, res):
    ds = datasets[res]
    assert len(ds) == KEPT[res]
    assert ds.images.shape == (KEPT[res], 3, res, res) and ds.images.dtype == np.uint8
    assert ds.channels == ["R", "G", "B"] and ds.manifest["kind"] == "image"
    assert ds.stretch is None and not ds.physical
    counts = ds.manifest["counts"]
    assert counts == {"detected": DETECTED, "kept": KEPT[res], "skipped": SKIPPED[res]}
    assert counts["kept"] + sum(counts["skipped"].values()) == counts["detected"]
    assert ds.manifest["preprocess"]["stamp"] == res
    assert ds.manifest["source"] == "builtin:hdf (skimage.data.hubble_deep_field)"


def test_rebuild_is_identical_and_warning_free(datasets):
    before = {res: np.array(ds.images) for res, ds in datasets.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any library's warning, not only ours
        rebuilt = {r: hdf.prepare_hdf(resolution=r, rebuild=True, progress=False) for r in before}
    for res, ds in rebuilt.items():
        assert np.array_equal(np.asarray(ds.images), before[res])
        assert ds.manifest["key"] == datasets[res].manifest["key"]
    assert hdf._detection_cache_path(hdf.DETECTION).exists()  # detected again (rebuild) and cached anew


def test_cache_is_reused(datasets):
    ds = datasets[64]
    mtime = (ds.root / "images.npy").stat().st_mtime_ns
    again = load_dataset("hdf", resolution=64, progress=False)
    assert again.root == ds.root
    assert (again.root / "images.npy").stat().st_mtime_ns == mtime


@pytest.mark.parametrize("res", [32, 64])
def test_stamps_are_centred_on_their_source(datasets, res):
    ds = datasets[res]
    lum = ds.images.astype(np.float64).mean(axis=1)  # (N, H, W)
    lum = np.clip(lum - np.median(lum, axis=(1, 2), keepdims=True), 0, None) * _disc(res, 6)
    yy, xx = np.mgrid[:res, :res]
    total = lum.sum(axis=(1, 2))
    cx, cy = (lum * xx).sum((1, 2)) / total, (lum * yy).sum((1, 2)) / total
    offset = np.hypot(cx - (res - 1) / 2, cy - (res - 1) / 2)
    assert np.mean(offset < 1.5) > 0.95
    cat = ds.catalog  # the catalogue centroid is within half a pixel of the stamp centre
    assert np.all(np.abs(cat["x"] - cat["stamp_x0"] - (res - 1) / 2) <= 0.5)
    assert np.all(np.abs(cat["y"] - cat["stamp_y0"] - (res - 1) / 2) <= 0.5)


@pytest.mark.parametrize("res", [32, 64])
def test_catalog_rows_align_with_images(datasets, res):
    ds = datasets[res]
    cat = ds.catalog
    assert len(cat) == len(ds) and set(COLUMNS + ["stamp_x0", "stamp_y0"]) <= set(cat.colnames)
    field = hdf.hdf_field()
    for i in (0, len(cat) // 2, len(cat) - 1):  # native stamps are plain slices of the field
        x0, y0 = int(cat["stamp_x0"][i]), int(cat["stamp_y0"][i])
        assert np.array_equal(ds.images[i].transpose(1, 2, 0), field[y0 : y0 + res, x0 : x0 + res])
    stamp_flux = ds.images.astype(np.float64).sum(axis=1)
    stamp_flux -= np.median(stamp_flux, axis=(1, 2), keepdims=True)
    central = (stamp_flux * _disc(res, res / 4)).sum(axis=(1, 2))
    assert np.argmax(cat["flux_total"]) == np.argmax(central)  # brightest source, brightest centre


def test_resolution_128_upsamples_the_64_px_cut(datasets):
    ds = hdf.prepare_hdf(resolution=128, progress=False)
    assert ds.images.shape == (KEPT[64], 3, 128, 128)
    assert np.array_equal(np.asarray(ds.catalog["id"]), np.asarray(datasets[64].catalog["id"]))
    # averaging 2 x 2 blocks gives back (nearly) the native 64 px stamps
    binned = ds.images.astype(np.float64).reshape(-1, 3, 64, 2, 64, 2).mean(axis=(3, 5))
    assert np.mean(np.abs(binned - datasets[64].images)) < 4.0


def test_crop_keeps_the_centre():
    stamp = np.arange(64 * 64 * 3, dtype=np.uint8).reshape(64, 64, 3)
    out = hdf._crop_resize(stamp, crop=0.5, resolution=32)  # no resize needed: a pure slice
    assert np.array_equal(out, stamp[16:48, 16:48])
    assert hdf._crop_resize(stamp, crop=0.75, resolution=32).shape == (32, 32, 3)


@pytest.mark.parametrize("crop", [0.890625, 0.859375, 0.6, 1.0])  # the first two: margins 3.5 and 4.5 px, ties
def test_crop_is_the_project_centre_crop(crop):
    from galaxy_core.data.transforms import centre_crop

    stamp = np.arange(64 * 64 * 3, dtype=np.uint8).reshape(64, 64, 3)
    side = centre_crop(stamp.transpose(2, 0, 1), crop).shape[-1]
    out = hdf._crop_resize(stamp, crop=crop, resolution=side)
    assert np.array_equal(out, centre_crop(stamp.transpose(2, 0, 1), crop).transpose(1, 2, 0))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"resolution": 48}, "resolution"),
        ({"resolution": 64.0 + 0.5}, "resolution"),
        ({"crop": 0.0}, "crop"),
        ({"crop": 1.5}, "crop"),
        ({"crop": "half"}, "crop"),
        ({"neighbours": "mask"}, "neighbours"),
    ],
)
def test_bad_options_raise_data_error(kwargs, match):
    with pytest.raises(DataError, match=match):
        hdf.prepare_hdf(**{"resolution": 64, "crop": 1.0, "progress": False, **kwargs})


def test_bad_stamp_size_raises_data_error():
    with pytest.raises(DataError, match="stamp"):
        hdf.hdf_stamp_catalog(stamp=48)


# --------------------------------------------------------------------------- isolated stamps


def test_neighbour_mask_grows_other_sources_but_never_into_the_own_segment():
    segm = np.zeros((9, 9), np.int32)
    segm[3:6, 0:3] = 7  # the stamp's own source
    segm[4, 4] = 9  # a one-pixel neighbour right beside it
    mask = hdf.neighbour_mask(segm, 7, grow=2)
    assert not mask[segm == 7].any()
    expected = np.zeros((9, 9), bool)
    expected[2:7, 2:7] = True  # the 1-pixel source grown by 2 (8-connected): a 5 x 5 square
    expected[segm == 7] = False
    assert np.array_equal(mask, expected)
    assert np.array_equal(hdf.neighbour_mask(segm, 7, grow=0), segm == 9)
    assert not hdf.neighbour_mask(np.where(segm == 9, 0, segm), 7).any()  # no neighbour: nothing changes


@pytest.fixture(scope="module")
def isolated():
    return hdf.prepare_hdf(resolution=32, neighbours="sky", progress=False)


def test_isolated_stamps_keep_the_source_and_replace_only_its_neighbours(datasets, isolated):
    keep, sky = datasets[32], isolated
    assert len(sky) == len(keep) and np.array_equal(np.asarray(sky.catalog["id"]), np.asarray(keep.catalog["id"]))
    segm = hdf._detection_maps(hdf.DETECTION)[1]["segm"]
    cat = hdf.hdf_catalog()
    small_ids = np.asarray(cat["id"])[np.asarray(cat["area"]) < hdf.DETECTION.min_area]
    removable = hdf._neighbour_ids()
    changed_stamps = small_seen = 0
    for i in range(0, len(keep), 7):
        row = keep.catalog[i]
        x0, y0 = int(row["stamp_x0"]), int(row["stamp_y0"])
        cut = segm[y0 : y0 + 32, x0 : x0 + 32]
        where = hdf.neighbour_mask(cut, int(row["id"]), removable=removable)
        differs = (keep.images[i] != sky.images[i]).any(axis=0)
        assert not differs[~where].any(), "only neighbour pixels may change"
        assert not differs[cut == row["id"]].any(), "the galaxy's own segment is untouched"
        small = np.isin(cut, small_ids) & ~where  # fragments below min_area, away from a big neighbour
        assert not differs[small].any(), "segments below min_area (mostly the galaxy's own knots) stay"
        small_seen += int(small.sum())
        changed_stamps += bool(differs.any())
    assert changed_stamps > 20 and small_seen > 100  # most 32 px stamps have a neighbour, many a fragment
    # the replaced pixels are sky: dark, not the neighbours' light
    diff = (keep.images != sky.images).any(axis=1)  # (n, 32, 32)
    replaced = np.moveaxis(sky.images, 1, -1)[diff]  # (m, 3) uint8
    original = np.moveaxis(keep.images, 1, -1)[diff]
    assert np.median(replaced) < 20 and original.mean() > 2 * replaced.mean()


def test_isolated_stamps_are_a_separate_recorded_dataset(datasets, isolated):
    assert isolated.manifest["key"] != datasets[32].manifest["key"]
    assert isolated.manifest["preprocess"]["neighbours"].startswith("sky")
    assert datasets[32].manifest["preprocess"]["neighbours"] == "keep"
    again = hdf.prepare_hdf(resolution=32, neighbours="sky", rebuild=True, progress=False)
    assert np.array_equal(again.images, isolated.images)  # seeded by source id: rebuilds are identical
    assert np.array_equal(load_dataset("hdf", resolution=32, neighbours="sky", progress=False).images,
                          isolated.images)


def test_neighbours_is_an_hdf_option_only():
    with pytest.raises(DataError, match="hdf"):
        load_dataset("sim", resolution=32, neighbours="sky", count=10, progress=False)


def test_the_detection_is_cached_on_disk_and_read_back_exactly(datasets, tmp_path, monkeypatch):
    """A new process reads the field's catalogue and maps from the cache instead of detecting
    again; what it reads equals what was detected, and a damaged entry is detected again."""
    monkeypatch.setattr(hdf, "cache_dir", lambda: tmp_path)
    hdf._detection_maps.cache_clear()
    table, maps = hdf._detection_maps(hdf.DETECTION)
    (entry,) = (tmp_path / "hdf").glob("detection-*.npz")
    hdf._detection_maps.cache_clear()

    def no_detection(params):
        raise AssertionError("detected again instead of read from the cache")

    with monkeypatch.context() as m:
        m.setattr(hdf, "_detect_and_flag", no_detection)
        read, read_maps = hdf._detection_maps(hdf.DETECTION)
    assert read.colnames == table.colnames and dict(read.meta) == dict(table.meta)
    for c in table.colnames:
        assert read[c].dtype == table[c].dtype and read[c].unit == table[c].unit
        assert np.array_equal(np.asarray(read[c]), np.asarray(table[c]))
    assert all(np.array_equal(read_maps[k], maps[k]) and not read_maps[k].flags.writeable for k in maps)
    entry.write_bytes(b"damaged")
    hdf._detection_maps.cache_clear()
    assert len(hdf._detection_maps(hdf.DETECTION)[0]) == len(table)  # detected again, rewritten
    assert hdf._read_detection(entry) is not None
    hdf._detection_maps.cache_clear()
