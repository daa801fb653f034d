"""Projection of a real galaxy into a StyleGAN's latent space (galaxy_core.explore.projection):
the checks of a target against the model (bands, unit, value range, pixel scale, size, grey
images), the figures reported for the returned reconstruction, and the saved projection that
regenerates it exactly. Run on the shipped checkpoints with stamps written in the test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from astropy.io import fits
from PIL import Image

from galaxy_core.errors import DataError
from galaxy_core.explore import projection, style
from galaxy_core.io.fits import write_fits_cube
from galaxy_core.io.stretch import AsinhStretch
from galaxy_core.models.pretrained import load_pretrained
from galaxy_core.paths import checkpoints_dir

GRI = "stylegan_sim64_gri"  # g, r, i in nanomaggy, trained on 0.396 arcsec pixels
RGB = "stylegan_hdf64_ft"  # R, G, B 8-bit images


def _shipped(name: str):
    path = checkpoints_dir() / f"{name}.json"
    if not path.exists():
        pytest.fail(f"shipped checkpoint {path} is missing")
    return load_pretrained(path)


@pytest.fixture(scope="module")
def gri():
    return _shipped(GRI)


@pytest.fixture(scope="module")
def rgb_model():
    return _shipped(RGB)


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Each test prepares its stamps in a cache of its own (no copy prepared by older code)."""
    monkeypatch.setenv("GALAXYGAN_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def flux(gri) -> np.ndarray:
    """A g/r/i stamp in nanomaggy, (3, 64, 64) float64: a galaxy the model itself made."""
    return gri.to_flux(gri.generate(gri.latents(1, 1)))[0]


def _upload(tmp_path, name: str, folder: str = "upload") -> Path:
    """Where a test writes its one stamp: a folder of its own, as the panel puts an upload."""
    (tmp_path / folder).mkdir(exist_ok=True)
    return tmp_path / folder / name


# ------------------------------------------------------------------------ FITS targets


def test_a_fits_stamp_in_the_models_bands_and_unit_is_accepted_without_notes(tmp_path, gri, flux):
    path = write_fits_cube(_upload(tmp_path, "gri.fits"), flux, bands=["g", "r", "i"], bunit="nanomaggy",
                           pixel_scale_arcsec=0.396)
    found = projection.target_from_file(path.parent, model=gri)
    assert found.label == "gri.fits" and found.names == ("gri.fits",)
    assert found.image.shape == (3, 64, 64) and found.clipped < 0.001
    assert found.notes == () and found.warnings == ()
    # the model's own image, written and read back in its bands and unit, is the model-range image again
    np.testing.assert_allclose(found.image, gri.generate(gri.latents(1, 1))[0], atol=0.01)


def test_pixels_at_the_edge_of_the_models_range_are_not_counted_as_clipped(tmp_path, gri):
    x = gri.generate(gri.latents(2, 1))
    x[:, :, :16] = -1.0  # a quarter of the stamp at the faintest value, as a generated sky clamped at -1
    path = write_fits_cube(_upload(tmp_path, "edge.fits"), gri.to_flux(x)[0], bands=["g", "r", "i"],
                           bunit="nanomaggy")
    found = projection.target_from_file(path.parent, model=gri)
    assert found.clipped == 0.0  # back at -1.0002 after float16 storage: within CLIP_TOLERANCE


def test_nmgy_is_the_same_unit_as_nanomaggy(tmp_path, gri, flux):
    path = write_fits_cube(_upload(tmp_path, "gri.fits"), flux, bands=["g", "r", "i"], bunit="nmgy")
    assert projection.target_from_file(path.parent, model=gri).warnings == ()


def test_a_file_that_names_nothing_still_works(tmp_path, gri, flux):
    fits.writeto(_upload(tmp_path, "plain.fits"), flux.astype(np.float32))
    found = projection.target_from_file(tmp_path / "upload", model=gri)
    assert found.image.shape == (3, 64, 64) and found.notes == () and found.warnings == ()


@pytest.mark.parametrize("cards", [
    {"BAND1": "u", "BAND2": "z", "BAND3": "y"},  # as write_fits_cube names them
    {"BANDS": "u,z,y"},
    {"FILTER1": "u", "FILTER2": "z", "FILTER3": "y"},
])
def test_a_fits_stamp_in_other_bands_is_refused_naming_both(tmp_path, gri, flux, cards):
    hdu = fits.PrimaryHDU(flux.astype(np.float32))
    hdu.header.update(cards)
    hdu.writeto(_upload(tmp_path, "uzy.fits"))
    with pytest.raises(DataError) as e:
        projection.target_from_file(tmp_path / "upload", model=gri)
    assert "uzy.fits" in str(e.value) and "bands u, z, y" in str(e.value) and "g, r, i" in str(e.value)


def test_the_models_bands_in_another_order_are_refused(tmp_path, gri, flux):
    path = write_fits_cube(_upload(tmp_path, "irg.fits"), flux[::-1], bands=["i", "r", "g"], bunit="nanomaggy")
    with pytest.raises(DataError, match=r"irg.fits: bands i, r, g \(the same bands in another order\), but "
                                         rf"{GRI} has g, r, i"):
        projection.target_from_file(path.parent, model=gri)


def test_a_fits_stamp_in_another_unit_is_refused_naming_both(tmp_path, gri, flux):
    path = write_fits_cube(_upload(tmp_path, "counts.fits"), flux * 1000, bands=["g", "r", "i"], bunit="count")
    with pytest.raises(DataError, match=r"counts.fits: pixel unit 'count' \(BUNIT\), but .* is in 'nanomaggy'"):
        projection.target_from_file(path.parent, model=gri)


def test_other_bands_and_unit_are_both_named(tmp_path, gri, flux):
    path = write_fits_cube(_upload(tmp_path, "uzy.fits"), flux * 1000, bands=["u", "z", "y"], bunit="count")
    with pytest.raises(DataError, match=r"bands u, z, y, but .* g, r, i; pixel unit 'count'"):
        projection.target_from_file(path.parent, model=gri)


def test_a_stamp_mostly_outside_the_models_range_is_refused(tmp_path, gri, flux):
    fits.writeto(_upload(tmp_path, "bright.fits"), (flux * 1000).astype(np.float32))  # names nothing: counts?
    with pytest.raises(DataError) as e:
        projection.target_from_file(tmp_path / "upload", model=gri)
    text = str(e.value)
    assert text.startswith("bright.fits: ") and "outside stylegan_sim64_gri's value range" in text
    assert "in nanomaggy (the model's unit)" in text


@pytest.mark.parametrize("rows, refused", [(1, False), (6, True)])
def test_the_clipped_fraction_is_measured_and_limited(tmp_path, gri, flux, rows, refused):
    bright = flux.copy()
    bright[:, :rows] = 1e4  # far above the brightest training value: rows / 64 of the pixels
    write_fits_cube(_upload(tmp_path, "bright.fits"), bright, bands=["g", "r", "i"], bunit="nanomaggy")
    if refused:  # 6 rows: 9.4 %
        with pytest.raises(DataError, match=r"bright.fits: 9\.\d% of its pixels lie outside"):
            projection.target_from_file(tmp_path / "upload", model=gri)
    else:  # 1 row: 1.6 %, kept and reported
        found = projection.target_from_file(tmp_path / "upload", model=gri)
        assert found.clipped == pytest.approx(1 / 64, abs=0.002)
        assert (found.image[:, 0] == 1.0).all()


def test_another_pixel_scale_is_a_warning_with_both_scales(tmp_path, gri, flux):
    path = write_fits_cube(_upload(tmp_path, "decals.fits"), flux, bands=["g", "r", "i"], bunit="nanomaggy",
                           pixel_scale_arcsec=0.262)
    found = projection.target_from_file(path.parent, model=gri)
    (warning,) = found.warnings
    assert warning.startswith("decals.fits: pixels of 0.262 arcsec") and "trained on 0.396 arcsec pixels" in warning
    assert "1.5 times the size" in warning  # 0.396 / 0.262


def test_the_pixel_scale_is_compared_after_the_resize(tmp_path, gri, flux):
    # 0.198 arcsec pixels over 128 px, resized to 64 px: 0.396 arcsec as the model sees it
    fine = np.repeat(np.repeat(flux, 2, axis=1), 2, axis=2) / 4
    path = write_fits_cube(_upload(tmp_path, "fine.fits"), fine, bands=["g", "r", "i"], bunit="nanomaggy",
                           pixel_scale_arcsec=0.198)
    assert projection.target_from_file(path.parent, model=gri).warnings == ()
    path = write_fits_cube(_upload(tmp_path, "same_card.fits", "other"), fine, bands=["g", "r", "i"],
                           bunit="nanomaggy", pixel_scale_arcsec=0.396)  # the model's value, 0.792 arcsec resized
    (warning,) = projection.target_from_file(path.parent, model=gri).warnings
    assert "pixels of 0.792 arcsec as prepared (0.396 arcsec in its header, resized from 128 to 64 px)" in warning


def test_a_small_fits_stamp_enlarged_is_a_warning(tmp_path, gri, flux):
    small = flux[:, 22:42, 22:42]  # 20 px: under half of 64
    path = write_fits_cube(_upload(tmp_path, "small.fits"), small, bands=["g", "r", "i"], bunit="nanomaggy")
    (warning,) = projection.target_from_file(path.parent, model=gri).warnings
    assert warning.startswith("small.fits: 20 px across") and "enlarged 3.2 times" in warning


# ---------------------------------------------------------------------- 8-bit targets


@pytest.mark.parametrize("bits", [8, 16])
def test_a_grey_image_serves_an_rgb_model_copied_into_r_g_b(tmp_path, rgb_model, bits):
    yy, xx = np.mgrid[:64, :64]
    grey = np.exp(-((xx - 32) ** 2 + (yy - 30) ** 2) / 120.0)
    if bits == 8:
        pixels = np.round(grey * 250).astype(np.uint8)
        expected8 = pixels
    else:
        pixels = np.round(grey * 60000).astype(np.uint16)
        expected8 = ((pixels.astype(np.int64) * 255 + 32767) // 65535).astype(np.uint8)  # full 16-bit range
    Image.fromarray(pixels).save(_upload(tmp_path, "grey.png"))
    found = projection.target_from_file(tmp_path / "upload", model=rgb_model)
    assert found.image.shape == (3, 64, 64)
    for c in range(3):
        np.testing.assert_array_equal(found.image[c], expected8 / np.float32(127.5) - np.float32(1))
    (note,) = found.notes
    assert note.startswith("grey.png is a grey (one-channel) image; its values were copied into R, G, B")
    assert found.warnings == ()


def test_a_grey_training_folder_stays_one_band(tmp_path):
    from galaxy_core.data import load_dataset

    folder = tmp_path / "greys"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (40, 40), dtype=np.uint8)).save(folder / f"{i}.png")
    assert load_dataset(folder, resolution=32, progress=False).channels == ["L"]


@pytest.mark.parametrize("side, warned", [(30, True), (40, False)])
def test_an_image_under_half_the_models_size_is_a_warning(tmp_path, rgb_model, side, warned):
    rgb = np.random.default_rng(side).integers(0, 255, (side, side + 9, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(_upload(tmp_path, "tiny.png"))
    found = projection.target_from_file(tmp_path / "upload", model=rgb_model)
    if warned:
        (warning,) = found.warnings
        assert warning.startswith("tiny.png: 30 px across (after the centre crop), enlarged 2.1 times to "
                                  f"{RGB}'s 64 px")
    else:
        assert found.warnings == ()


def test_an_8_bit_image_for_a_flux_model_is_still_refused(tmp_path, gri):
    Image.fromarray(np.zeros((64, 64), np.uint8) + np.arange(64, dtype=np.uint8)).save(_upload(tmp_path, "g.png"))
    with pytest.raises(DataError, match="g.png: 8-bit data, but .* give a FITS stamp in flux units"):
        projection.target_from_file(tmp_path / "upload", model=gri)


# ------------------------------------------------------- the result and its saved form


@pytest.fixture(scope="module")
def projected(gri):
    target = gri.generate(gri.latents(7, 1))[0]
    res = projection.project(gri, target, space="w+", steps=6, w_avg_samples=200, init_candidates=4,
                             feature_weight=0.1, chi2_weight=0.002, seed=0)
    return target, res


@pytest.mark.slow
def test_the_reported_figures_are_those_of_the_returned_reconstruction(gri, projected):
    from galaxy_core.metrics.features import load_extractor

    target, res = projected
    recon = res.reconstruction
    np.testing.assert_allclose(res.residual, target - recon, atol=1e-7)
    mse = float(np.mean((target.astype(np.float64) - recon.astype(np.float64)) ** 2))
    assert res.final["pixel"] == pytest.approx(mse, rel=1e-9) and res.pixel_mse == res.final["pixel"]
    st = AsinhStretch.from_dict(gri.stretch)
    chi2 = float(np.mean(((st.inverse(target) - st.inverse(recon)) / res.sigma[:, None, None]) ** 2))
    assert res.chi2 == pytest.approx(chi2, rel=1e-9) and res.final["chi2"] == res.chi2
    enc = load_extractor("galaxy")
    with torch.no_grad():
        f = torch.nn.functional.normalize(enc.forward(torch.from_numpy(np.stack([target, recon]))), dim=1)
    assert res.final["feature"] == pytest.approx(1 - float(f[0] @ f[1]), rel=1e-3, abs=1e-6)
    total = res.final["pixel"] + 0.1 * res.final["feature"] + 0.002 * res.final["chi2"]
    assert projection.reconstruction_loss(res) == pytest.approx(total, rel=1e-12)
    # the last step's record is measured before that step's update: not the figure of the image
    assert res.losses[-1]["pixel"] != pytest.approx(mse, rel=1e-3)


@pytest.mark.slow
def test_the_saved_projection_regenerates_the_reconstruction_exactly(tmp_path, gri, projected):
    _, res = projected
    data = projection.projection_npz(res, model=gri)
    saved = projection.read_projection_npz(data)
    assert saved["checkpoint_id"] == gri.id and saved["checkpoint"] == GRI and saved["space"] == "w+"
    assert saved["noise_layers"] == list(gri.G.synthesis.noise_layers)
    np.testing.assert_array_equal(saved["ws"], res.ws)
    np.testing.assert_allclose(projection.render_projection(gri, data), res.reconstruction, rtol=0, atol=1e-6)
    path = tmp_path / "p.npz"
    path.write_bytes(data)
    np.testing.assert_allclose(projection.render_projection(gri, path), res.reconstruction, rtol=0, atol=1e-6)
    # ws alone, with the checkpoint's constant noise, is another image: why the noise maps are saved
    assert np.abs(style.synthesize(gri, res.ws[None])[0] - res.reconstruction).max() > 0.01


@pytest.mark.slow
def test_a_saved_projection_is_refused_by_another_checkpoint_and_when_incomplete(tmp_path, gri, projected):
    _, res = projected
    data = projection.projection_npz(res, model=gri)
    other = _shipped("stylegan_sim64")
    with pytest.raises(DataError, match=rf"p.npz: made with checkpoint {GRI} \(id {gri.id}\), not stylegan_sim64 "
                                        rf"\(id {other.id}\)"):
        projection.render_projection(other, data, name="p.npz")
    with pytest.raises(DataError, match="p.npz: not a projection file"):
        projection.read_projection_npz(b"not a zip", name="p.npz")
    import io

    buf = io.BytesIO()
    np.savez(buf, ws=res.ws)  # ws alone
    with pytest.raises(DataError, match="p.npz: not a galaxygan-projection/1 file .*lacks latent, noise_layers"):
        projection.read_projection_npz(buf.getvalue(), name="p.npz")
